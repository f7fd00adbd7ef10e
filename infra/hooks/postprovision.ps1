# azd postprovision hook (after `azd provision` and `azd up`), Windows twin of postprovision.sh:
#  1. Microsoft Graph application roles of the managed identity, unless the deployment granted them
#     (grantGraphPermissions): the exact `az rest` calls for an admin, with the ids looked up now.
#     A new identity's service principal takes a few minutes to replicate in Entra ID, so the hook
#     waits for it (about a minute) and says to run it again if it is still not visible.
#  2. Webhook secrets. App Service caches Key Vault references for up to 24 hours, so a secret
#     stored or changed after the app read it is not seen until the app restarts. The hook restarts
#     the app when a source secret was created or changed since it last did (it records the
#     secrets' update times in the azd environment as WEBHOOK_SECRETS_LOADED), and prints the
#     commands for a secret that is still missing.
#  3. The sources' function keys (function-keys.ps1, also the postdeploy hook).
# It never fails the provisioning: every problem becomes a message with the command to run.
$ErrorActionPreference = 'Continue'

# azd's subscription, which need not be az's default one (AZURE_SUBSCRIPTION_ID is azd's own variable).
$onSubscription = if ($env:AZURE_SUBSCRIPTION_ID) { @('--subscription', $env:AZURE_SUBSCRIPTION_ID) } else { @() }

$GraphAppId = '00000003-0000-0000-c000-000000000000'
# How long to wait for a new identity's service principal to show up in Graph: 6 x 10 s.
$ReplicationTries = 6
$ReplicationWaitSeconds = 10

$msi = $env:AZURE_MANAGED_IDENTITY_PRINCIPAL_ID
$roles = if ($env:GRAPH_APP_ROLES) { $env:GRAPH_APP_ROLES } else { 'LearningContent.ReadWrite.All' }
$granted = $env:GRAPH_PERMISSIONS_GRANTED -eq 'true'
$vault = $env:AZURE_KEY_VAULT_NAME
$secrets = $env:WEBHOOK_SECRET_NAMES
$app = $env:SERVICE_API_NAME
$group = $env:AZURE_RESOURCE_GROUP
$loaded = $env:WEBHOOK_SECRETS_LOADED
$restartCmd = "az functionapp restart -g $group -n $app"
$hasAz = [bool](Get-Command az -ErrorAction SilentlyContinue)

Write-Host ''
Write-Host "== Microsoft Graph application roles ($roles)"
if ($granted) {
    Write-Host "Granted by the deployment to the managed identity (service principal $msi)."
}
elseif (-not $msi) {
    Write-Host "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID is not set: run 'azd provision' first."
}
else {
    $graphSp = $null
    $appRoles = @()
    $assigned = @()
    if ($hasAz) {
        $graphSp = az ad sp show --id $GraphAppId --query id -o tsv 2>$null
    }
    if ($graphSp) {
        # A grant to a service principal Graph cannot see yet fails with Request_ResourceNotFound.
        $visible = $false
        for ($try = 1; $try -le $ReplicationTries; $try++) {
            az ad sp show --id $msi --query id -o tsv 2>$null | Out-Null
            if ($LASTEXITCODE -eq 0) { $visible = $true; break }
            if ($try -lt $ReplicationTries) { Start-Sleep -Seconds $ReplicationWaitSeconds }
        }
        if (-not $visible) {
            Write-Host "The managed identity's service principal ($msi) is not visible in Microsoft Graph yet:"
            Write-Host 'a new identity takes a few minutes to replicate in Entra ID, and the calls below fail with'
            Write-Host "Request_ResourceNotFound until it has. Run 'azd hooks run postprovision' again in a few minutes."
            Write-Host ''
        }
        # Role ids are looked up by value.
        $appRoles = az ad sp show --id $GraphAppId --query "appRoles[?contains(allowedMemberTypes, 'Application')].{value: value, id: id}" -o json 2>$null | ConvertFrom-Json
        $assigned = az rest --method GET --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$msi/appRoleAssignments" --query "value[].appRoleId" -o tsv 2>$null
    }
    Write-Host 'Not granted by this deployment (grantGraphPermissions=false). A Global Administrator or'
    Write-Host "Privileged Role Administrator grants them to the managed identity (service principal ${msi}):"
    Write-Host ''
    $todo = $false
    foreach ($role in $roles.Split(',')) {
        $roleId = ($appRoles | Where-Object { $_.value -eq $role } | Select-Object -First 1).id
        if ($roleId -and ($assigned -contains $roleId)) {
            Write-Host "# ${role}: already granted"
            continue
        }
        $todo = $true
        Write-Host "# $role"
        # The JSON body goes through a file: quoting JSON for a native command differs between
        # PowerShell versions, a file does not.
        if ($graphSp -and $roleId) {
            Write-Host "@{ principalId = '$msi'; resourceId = '$graphSp'; appRoleId = '$roleId' } | ConvertTo-Json | Set-Content grant.json"
        }
        else {
            Write-Host "`$graphSpId = az ad sp show --id $GraphAppId --query id -o tsv"
            Write-Host "`$roleId = az ad sp show --id $GraphAppId --query `"appRoles[?value=='$role'].id`" -o tsv"
            Write-Host "@{ principalId = '$msi'; resourceId = `$graphSpId; appRoleId = `$roleId } | ConvertTo-Json | Set-Content grant.json"
        }
        Write-Host "az rest --method POST --uri https://graph.microsoft.com/v1.0/servicePrincipals/$msi/appRoleAssignments --headers Content-Type=application/json --body '@grant.json'"
        Write-Host ''
    }
    if ($todo) {
        Write-Host 'Or, signed in as such an admin: azd env set GRANT_GRAPH_PERMISSIONS true; azd provision'
    }
}

Write-Host ''
Write-Host '== Webhook secrets'
if (-not $secrets) {
    Write-Host "No webhook source configured yet (VIVA_SOURCES). See docs/deploy.md, 'Add a webhook source':"
    Write-Host "store the source's secret in Key Vault $vault first, then add the source."
}
else {
    $listing = @()
    $listed = $false
    if ($hasAz -and $vault) {
        # "<name><TAB><updated>" per secret; needs a Key Vault data role that can list secrets.
        $listing = az keyvault secret list --vault-name $vault --query "[].[name, attributes.updated]" -o tsv 2>$null
        $listed = $LASTEXITCODE -eq 0
    }
    if (-not $listed) {
        Write-Host "Could not list the secrets of Key Vault $vault (az not signed in, or no Key Vault role)."
        Write-Host "Every source's secret must exist before its source answers; after storing or changing one:"
        Write-Host "  $restartCmd"
    }
    else {
        $updatedByName = @{}
        foreach ($line in @($listing)) {
            $parts = "$line".Split("`t")
            if ($parts.Count -ge 2) { $updatedByName[$parts[0]] = $parts[1].Trim() }
        }
        $stamp = @()
        foreach ($name in $secrets.Split(',')) {
            if ($updatedByName.ContainsKey($name)) {
                $stamp += "$name=$($updatedByName[$name])"
            }
            else {
                Write-Host "Secret '$name' is missing from Key Vault ${vault}: its source answers 500 (source-misconfigured)"
                Write-Host 'until you store it and restart the app:'
                Write-Host "  az keyvault secret set --vault-name $vault --name $name --value '<whsec_ secret from the LMS>'"
                Write-Host "  $restartCmd"
            }
        }
        $stamp = $stamp -join ','
        if ($stamp -and ($stamp -ne $loaded)) {
            az functionapp restart -g $group -n $app @onSubscription 2>$null | Out-Null
            if ($LASTEXITCODE -eq 0) {
                Write-Host "A source secret was created or changed since the app last read them: restarted $app,"
                Write-Host 'so the Key Vault references resolve to the current secrets now.'
                if (Get-Command azd -ErrorAction SilentlyContinue) {
                    azd env set WEBHOOK_SECRETS_LOADED $stamp 2>$null | Out-Null
                }
            }
            else {
                Write-Host 'A source secret was created or changed since the app last read them; restart the app:'
                Write-Host "  $restartCmd"
            }
        }
        elseif ($stamp) {
            Write-Host 'Source secrets unchanged since the app last read them.'
        }
    }
}

& (Join-Path $PSScriptRoot 'function-keys.ps1')
exit 0
