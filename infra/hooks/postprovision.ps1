# azd postprovision hook (after `azd provision` and `azd up`), Windows twin of postprovision.sh:
#  1. Microsoft Graph application roles of the managed identity, unless the deployment granted them
#     (grantGraphPermissions): the exact `az rest` calls for an admin, with the ids looked up now.
#  2. The webhook secrets to put into Key Vault.
# It only reads and prints, and never fails the provisioning.
$ErrorActionPreference = 'Continue'

$GraphAppId = '00000003-0000-0000-c000-000000000000'
$msi = $env:AZURE_MANAGED_IDENTITY_PRINCIPAL_ID
$roles = if ($env:GRAPH_APP_ROLES) { $env:GRAPH_APP_ROLES } else { 'LearningContent.ReadWrite.All' }
$granted = $env:GRAPH_PERMISSIONS_GRANTED -eq 'true'
$vault = $env:AZURE_KEY_VAULT_NAME
$secrets = $env:WEBHOOK_SECRET_NAMES
$app = $env:SERVICE_API_NAME

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
    if (Get-Command az -ErrorAction SilentlyContinue) {
        $graphSp = az ad sp show --id $GraphAppId --query id -o tsv 2>$null
        if ($graphSp) {
            # Role ids are looked up by value.
            $appRoles = az ad sp show --id $GraphAppId --query "appRoles[?contains(allowedMemberTypes, 'Application')].{value: value, id: id}" -o json 2>$null | ConvertFrom-Json
            $assigned = az rest --method GET --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$msi/appRoleAssignments" --query "value[].appRoleId" -o tsv 2>$null
        }
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
    Write-Host "No webhook source configured yet (VIVA_SOURCES). See docs/deploy.md, 'Add a webhook source'."
}
else {
    foreach ($name in $secrets.Split(',')) {
        Write-Host "Secret '$name' in Key Vault $vault; if it is not set yet:"
        Write-Host "  az keyvault secret set --vault-name $vault --name $name --value '<whsec_ secret from the LMS>'"
    }
    Write-Host "Webhook URL of source <name>: https://$app.azurewebsites.net/api/webhooks/<name> (function key: docs/deploy.md)"
}
exit 0
