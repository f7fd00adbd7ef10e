# azd postprovision hook (after `azd provision` and `azd up`), Windows twin of postprovision.sh:
#  1. Microsoft Graph sign-in. The worker pushes content as the Viva Learning app registration
#     (infra/app/viva-app.bicep), whose federated credential is the managed identity: Microsoft's
#     unpublished draft ISV guide binds a provider registration to the app id that registered it.
#     - The app exists (VIVA_APP_CLIENT_ID): unless the deployment consented for it
#       (grantGraphPermissions), the exact `az rest` calls of its admin consent, ids looked up now
#       and roles already granted skipped; then how to register the provider through it.
#     - No app (CREATE_VIVA_APP=false): the `az` commands an admin runs to create it, with the
#       federated credential's issuer, subject and audience filled in from the azd outputs.
#     - Managed-identity mode (GRAPH_AUTH_MODE=managed-identity, the fallback): its risk, and the
#       identity's own Graph roles for an admin. A new identity's service principal takes a few
#       minutes to replicate in Entra ID, so the hook waits for it (about a minute) and says to run
#       it again if it is still not visible.
#  2. Source secrets (WEBHOOK_SECRET_NAMES: every webhook and LMS API secret the sources name,
#     each once). App Service caches Key Vault references for up to 24 hours, so a secret
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
$GraphRoot = 'https://graph.microsoft.com/v1.0'
# How long to wait for a new identity's service principal to show up in Graph: 6 x 10 s.
$ReplicationTries = 6
$ReplicationWaitSeconds = 10

function Get-Or($value, $default) { if ($value) { $value } else { $default } }

$msi = $env:AZURE_MANAGED_IDENTITY_PRINCIPAL_ID
$roles = Get-Or $env:GRAPH_APP_ROLES 'LearningContent.ReadWrite.All'
$granted = $env:GRAPH_PERMISSIONS_GRANTED -eq 'true'
$client = $env:VIVA_APP_CLIENT_ID
$tenant = Get-Or $env:VIVA_APP_TENANT_ID '<tenant id>'
$appCreated = $env:VIVA_APP_CREATED -eq 'true'
$appName = Get-Or $env:VIVA_APP_DISPLAY_NAME 'Viva Learning Sync'
$ficIssuer = Get-Or $env:VIVA_APP_FIC_ISSUER "https://login.microsoftonline.com/$tenant/v2.0"
$ficAudience = Get-Or $env:VIVA_APP_FIC_AUDIENCE 'api://AzureADTokenExchange'
$appRoles = Get-Or $env:VIVA_APP_GRAPH_ROLES 'LearningContent.ReadWrite.All,LearningAssignedCourse.ReadWrite.All,LearningSelfInitiatedCourse.ReadWrite.All'
$appScopes = Get-Or $env:VIVA_APP_GRAPH_SCOPES 'LearningProvider.ReadWrite'
$mode = Get-Or $env:GRAPH_AUTH_MODE_IN_USE $(if ($client) { 'app' } else { 'managed-identity' })
$vault = $env:AZURE_KEY_VAULT_NAME
$secrets = $env:WEBHOOK_SECRET_NAMES
$app = $env:SERVICE_API_NAME
$group = $env:AZURE_RESOURCE_GROUP
$loaded = $env:WEBHOOK_SECRETS_LOADED
$restartCmd = "az functionapp restart -g $group -n $app"
$hasAz = [bool](Get-Command az -ErrorAction SilentlyContinue)

# Microsoft Graph's service principal and its application roles: role ids are looked up by value.
$graphSp = $null
$graphRoles = @()
if ($hasAz) {
    $graphSp = az ad sp show --id $GraphAppId --query id -o tsv 2>$null
}
if ($graphSp) {
    $graphRoles = az ad sp show --id $GraphAppId --query "appRoles[?contains(allowedMemberTypes, 'Application')].{value: value, id: id}" -o json 2>$null | ConvertFrom-Json
}
$script:todo = $false

# Waits until Graph sees the service principal (an object id or an app id); says so if it never does.
function Wait-Visible($id) {
    if (-not $graphSp) { return $true }
    for ($try = 1; $try -le $ReplicationTries; $try++) {
        az ad sp show --id $id --query id -o tsv 2>$null | Out-Null
        if ($LASTEXITCODE -eq 0) { return $true }
        if ($try -lt $ReplicationTries) { Start-Sleep -Seconds $ReplicationWaitSeconds }
    }
    Write-Host "The service principal $id is not visible in Microsoft Graph yet: a new identity or app takes a"
    Write-Host 'few minutes to replicate in Entra ID, and the calls below fail with Request_ResourceNotFound'
    Write-Host "until it has. Run 'azd hooks run postprovision' again in a few minutes."
    Write-Host ''
    return $false
}

# Prints the app-role grants of the comma-separated roles to the service principal $sp (an object
# id, or empty: then the printed commands look it up from $appIdRef as $spId), skipping the roles it
# already holds. The JSON body goes through a file: quoting JSON for a native command differs
# between PowerShell versions, a file does not.
function Write-RoleGrants($sp, $roleList, $appIdRef) {
    $assigned = @()
    if ($graphSp -and $sp) {
        $assigned = az rest --method GET --uri "$GraphRoot/servicePrincipals/$sp/appRoleAssignments" --query "value[].appRoleId" -o tsv 2>$null
    }
    $spRef = $sp
    if (-not $sp) {
        $spRef = '$spId'
        Write-Host "`$spId = az ad sp show --id $appIdRef --query id -o tsv"
    }
    foreach ($role in $roleList.Split(',')) {
        $roleId = ($graphRoles | Where-Object { $_.value -eq $role } | Select-Object -First 1).id
        if ($roleId -and ($assigned -contains $roleId)) {
            Write-Host "# ${role}: already granted"
            continue
        }
        $script:todo = $true
        Write-Host "# $role"
        if ($graphSp -and $roleId -and $sp) {
            Write-Host "@{ principalId = '$sp'; resourceId = '$graphSp'; appRoleId = '$roleId' } | ConvertTo-Json | Set-Content grant.json"
        }
        else {
            Write-Host "`$graphSpId = az ad sp show --id $GraphAppId --query id -o tsv"
            Write-Host "`$roleId = az ad sp show --id $GraphAppId --query `"appRoles[?value=='$role'].id`" -o tsv"
            Write-Host "@{ principalId = $(if ($sp) { "'$sp'" } else { $spRef }); resourceId = `$graphSpId; appRoleId = `$roleId } | ConvertTo-Json | Set-Content grant.json"
        }
        Write-Host "az rest --method POST --uri `"$GraphRoot/servicePrincipals/$spRef/appRoleAssignments`" --headers Content-Type=application/json --body '@grant.json'"
        Write-Host ''
    }
}

# Prints the tenant-wide consent (AllPrincipals) of the delegated scopes for the client service
# principal $sp (or $spId, as above), unless they are already consented.
function Write-ScopeGrant($sp, $scopeList) {
    $scope = $scopeList.Replace(',', ' ')
    if ($graphSp -and $sp) {
        $consented = az rest --method GET --uri "$GraphRoot/oauth2PermissionGrants?`$filter=clientId eq '$sp' and resourceId eq '$graphSp'" --query "value[?consentType=='AllPrincipals'].scope" -o tsv 2>$null
        $have = @("$consented" -split '\s+' | Where-Object { $_ })
        if (-not ($scope.Split(' ') | Where-Object { $have -notcontains $_ })) {
            Write-Host "# delegated ${scope}: already consented for all users"
            return
        }
    }
    $script:todo = $true
    Write-Host "# delegated $scope, for all users (the admin who registers the provider signs in through the app)"
    if ($graphSp -and $sp) {
        Write-Host "@{ clientId = '$sp'; consentType = 'AllPrincipals'; resourceId = '$graphSp'; scope = '$scope' } | ConvertTo-Json | Set-Content consent.json"
    }
    else {
        Write-Host "`$graphSpId = az ad sp show --id $GraphAppId --query id -o tsv"
        Write-Host "@{ clientId = $(if ($sp) { "'$sp'" } else { '$spId' }); consentType = 'AllPrincipals'; resourceId = `$graphSpId; scope = '$scope' } | ConvertTo-Json | Set-Content consent.json"
    }
    Write-Host "az rest --method POST --uri $GraphRoot/oauth2PermissionGrants --headers Content-Type=application/json --body '@consent.json'"
    Write-Host ''
}

Write-Host ''
Write-Host "== Microsoft Graph sign-in (GRAPH_AUTH_MODE=$mode)"
if ($client) {
    Write-Host "The Viva Learning app $client ('$appName', tenant $tenant) has the managed identity"
    Write-Host "(service principal $(Get-Or $msi '?')) as its federated credential: the worker needs no secret."
    if ($appCreated -and $granted) {
        Write-Host "Admin consent granted by the deployment: $appRoles (application), $appScopes (delegated)."
    }
    else {
        $appSp = $null
        if ($graphSp -and (Wait-Visible $client)) {
            $appSp = az ad sp show --id $client --query id -o tsv 2>$null
        }
        Write-Host 'Admin consent for the app: a Privileged Role Administrator or Global Administrator runs'
        Write-Host ''
        $script:todo = $false
        Write-RoleGrants $appSp $appRoles $client
        Write-ScopeGrant $appSp $appScopes
        if ($script:todo) {
            Write-Host "Or in the Microsoft Entra admin center: App registrations > $appName > API permissions >"
            Write-Host 'Grant admin consent.'
            if ($appCreated) {
                Write-Host 'Or, signed in as such an admin: azd env set GRANT_GRAPH_PERMISSIONS true; azd provision'
            }
        }
    }
    Write-Host ''
    Write-Host 'Then a Knowledge Administrator (or Global Administrator) with a Viva Learning licence registers'
    Write-Host 'the provider through this app (browser sign-in; add --credential device-code without a browser):'
    Write-Host "  vlsync provider register --client-id $client --tenant-id $tenant --display-name ... (docs/deploy.md)"
    Write-Host "'vlsync doctor' checks the app, its federated credential, the app token's roles and the registration."
}
else {
    $subject = Get-Or $msi '<AZURE_MANAGED_IDENTITY_PRINCIPAL_ID>'
    Write-Host 'No Viva Learning app registration: the deployment did not create one (CREATE_VIVA_APP=false).'
    Write-Host 'The worker pushes content as that app, with the managed identity as its only credential. An admin'
    Write-Host 'who may create apps (Application Developer or Cloud Application Administrator, or any user while'
    Write-Host "'Users can register applications' is on) creates it:"
    Write-Host ''
    Write-Host "# 1. The app: a public client, for the admin's sign-in (browser: http://localhost; device code)"
    Write-Host "`$appId = az ad app create --display-name `"$appName`" --sign-in-audience AzureADMyOrg --public-client-redirect-uris http://localhost --is-fallback-public-client true --query appId -o tsv"
    Write-Host "# 2. Its credential: the function app's managed identity (federated identity credential, no secret)"
    Write-Host "@{ name = 'function-app-managed-identity'; issuer = '$ficIssuer'; subject = '$subject'; audiences = @('$ficAudience') } | ConvertTo-Json | Set-Content fic.json"
    Write-Host "az ad app federated-credential create --id `$appId --parameters '@fic.json'"
    Write-Host '# 3. Its service principal'
    Write-Host 'az ad sp create --id $appId'
    Write-Host '# 4. The Microsoft Graph permissions it requires (ids looked up by value)'
    foreach ($role in $appRoles.Split(',')) {
        Write-Host "az ad app permission add --id `$appId --api $GraphAppId --api-permissions `"`$(az ad sp show --id $GraphAppId --query `"appRoles[?value=='$role'].id`" -o tsv)=Role`""
    }
    foreach ($scope in $appScopes.Split(',')) {
        Write-Host "az ad app permission add --id `$appId --api $GraphAppId --api-permissions `"`$(az ad sp show --id $GraphAppId --query `"oauth2PermissionScopes[?value=='$scope'].id`" -o tsv)=Scope`""
    }
    Write-Host '# 5. Admin consent (a Privileged Role Administrator or Global Administrator)'
    $script:todo = $false
    Write-RoleGrants $null $appRoles '$appId'
    Write-ScopeGrant $null $appScopes
    Write-Host '# 6. The worker signs in as the app from the next provision on (the template owns the app settings:'
    Write-Host '#    one set with az functionapp config appsettings set is removed by the next azd provision)'
    Write-Host 'azd env set VIVA_APP_CLIENT_ID $appId'
    Write-Host 'azd env set GRAPH_AUTH_MODE app'
    Write-Host 'azd provision'
    Write-Host ''
    if ($mode -eq 'app') {
        Write-Host 'WARNING: GRAPH_AUTH_MODE is app but there is no app (VIVA_APP_CLIENT_ID is empty): the worker'
        Write-Host 'cannot get a Graph token. Create the app as above, or: azd env set GRAPH_AUTH_MODE managed-identity'
    }
}

if ($mode -eq 'managed-identity') {
    Write-Host ''
    Write-Host "== Managed-identity fallback: Graph application roles of the managed identity ($roles)"
    Write-Host "The worker pushes content as the managed identity's own app id, not as the app that registered"
    Write-Host "the provider. Microsoft's unpublished draft ISV guide binds a registration to the registering app"
    Write-Host 'id: if that holds, Viva Learning refuses this content (unconfirmed). Prefer the app above.'
    if ($granted) {
        Write-Host "Granted by the deployment to the managed identity (service principal $msi)."
    }
    elseif (-not $msi) {
        Write-Host "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID is not set: run 'azd provision' first."
    }
    else {
        # A grant to a service principal Graph cannot see yet fails with Request_ResourceNotFound.
        Wait-Visible $msi | Out-Null
        Write-Host 'Not granted by this deployment (grantGraphPermissions=false). A Global Administrator or'
        Write-Host "Privileged Role Administrator grants them to the managed identity (service principal ${msi}):"
        Write-Host ''
        $script:todo = $false
        Write-RoleGrants $msi $roles $msi
        if ($script:todo) {
            Write-Host 'Or, signed in as such an admin: azd env set GRANT_GRAPH_PERMISSIONS true; azd provision'
        }
    }
}

Write-Host ''
Write-Host '== Webhook secrets'
if (-not $secrets -and $env:WEBHOOK_SOURCE_NAMES) {
    # e.g. only Canvas sources without fetch-back: Canvas signs with its published keys.
    Write-Host 'No source names a Key Vault secret (secretName, apiSecretName): nothing to check.'
}
elseif (-not $secrets) {
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
                Write-Host "  az keyvault secret set --vault-name $vault --name $name --value '<the secret from the LMS: webhook secret, key, token or API secret>'"
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
