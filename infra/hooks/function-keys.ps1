# One function key per webhook source on receive_webhook, Windows twin of function-keys.sh: the azd
# postdeploy hook, and the last step of postprovision.ps1 (a source added by `azd provision` alone).
#
# A key is created only when the source has none, never replaced: re-running the hook must not
# rotate a key an LMS already uses. Keys are function-level, not host keys: they open the intake
# and nothing else. They are not Bicep resources because `azd up` provisions before receive_webhook
# exists (see infra/app/function.bicep). The hook prints how to read a key, never a key itself.
# It never fails the deployment: every problem becomes a message with the command to run.
$ErrorActionPreference = 'Continue'

# azd's subscription, which need not be az's default one (AZURE_SUBSCRIPTION_ID is azd's own variable).
$onSubscription = if ($env:AZURE_SUBSCRIPTION_ID) { @('--subscription', $env:AZURE_SUBSCRIPTION_ID) } else { @() }

$Function = 'receive_webhook'
$app = $env:SERVICE_API_NAME
$group = $env:AZURE_RESOURCE_GROUP
$hostName = $env:SERVICE_API_HOST_NAME
$sources = $env:WEBHOOK_SOURCE_NAMES
$keysCmd = 'az functionapp function keys'
$target = "-g $group -n $app --function-name $Function"

Write-Host ''
Write-Host '== Function keys (one per source)'
if (-not $sources) {
    Write-Host 'No webhook source configured yet (VIVA_SOURCES).'
    exit 0
}

$existing = @()
$listed = $false
if (Get-Command az -ErrorAction SilentlyContinue) {
    # The key names of receive_webhook; fails while the function is not deployed.
    $existing = az functionapp function keys list -g $group -n $app --function-name $Function @onSubscription --query "keys(@)" -o tsv 2>$null
    $listed = $LASTEXITCODE -eq 0
}

foreach ($source in $sources.Split(',')) {
    if (-not $listed) {
        Write-Host "# ${source}: $Function is not deployed yet (or az is not signed in); after 'azd deploy':"
        Write-Host "  $keysCmd set $target --key-name $source"
    }
    elseif (@($existing) -contains $source) {
        Write-Host "# ${source}: key exists"
    }
    else {
        az functionapp function keys set -g $group -n $app --function-name $Function --key-name $source @onSubscription 2>$null | Out-Null
        if ($LASTEXITCODE -eq 0) {
            Write-Host "# ${source}: key created"
        }
        else {
            Write-Host "# ${source}: could not create the key; create it with:"
            Write-Host "  $keysCmd set $target --key-name $source"
        }
    }
}

Write-Host ''
Write-Host "Each LMS calls https://$hostName/api/webhooks/<source> with its key in the x-functions-key header."
# JMESPath needs the quotes for names with '-'.
Write-Host "Read a source's key:   $keysCmd list $target --query '`"<source>`"' -o tsv"
Write-Host "Revoke a source's key: $keysCmd delete $target --key-name <source>"
exit 0
