#!/bin/sh
# azd postprovision hook (after `azd provision` and `azd up`); Windows twin: postprovision.ps1.
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
#  3. The sources' function keys (function-keys.sh, also the postdeploy hook).
# It never fails the provisioning: every problem becomes a message with the command to run.
set -u

# azd's subscription, which need not be az's default one (AZURE_SUBSCRIPTION_ID is azd's own variable).
subscription="${AZURE_SUBSCRIPTION_ID:-}"
on_subscription="${subscription:+--subscription $subscription}"

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
GRAPH_ROOT=https://graph.microsoft.com/v1.0
# How long to wait for a new identity's service principal to show up in Graph: 6 x 10 s.
REPLICATION_TRIES=6
REPLICATION_WAIT_SECONDS=10

msi="${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}"
roles="${GRAPH_APP_ROLES:-LearningContent.ReadWrite.All}"
granted="${GRAPH_PERMISSIONS_GRANTED:-false}"
client="${VIVA_APP_CLIENT_ID:-}"
tenant="${VIVA_APP_TENANT_ID:-<tenant id>}"
app_created="${VIVA_APP_CREATED:-false}"
app_name="${VIVA_APP_DISPLAY_NAME:-Viva Learning Sync}"
fic_issuer="${VIVA_APP_FIC_ISSUER:-https://login.microsoftonline.com/$tenant/v2.0}"
fic_audience="${VIVA_APP_FIC_AUDIENCE:-api://AzureADTokenExchange}"
app_roles="${VIVA_APP_GRAPH_ROLES:-LearningContent.ReadWrite.All,LearningAssignedCourse.ReadWrite.All,LearningSelfInitiatedCourse.ReadWrite.All}"
app_scopes="${VIVA_APP_GRAPH_SCOPES:-LearningProvider.ReadWrite}"
mode="${GRAPH_AUTH_MODE_IN_USE:-}"
if [ -z "$mode" ]; then
  if [ -n "$client" ]; then mode=app; else mode=managed-identity; fi
fi
vault="${AZURE_KEY_VAULT_NAME:-}"
secrets="${WEBHOOK_SECRET_NAMES:-}"
app="${SERVICE_API_NAME:-}"
group="${AZURE_RESOURCE_GROUP:-}"
loaded="${WEBHOOK_SECRETS_LOADED:-}"
restart_cmd="az functionapp restart -g $group -n $app"

has_az=""
command -v az >/dev/null 2>&1 && has_az=1
# Microsoft Graph's service principal and its application roles, "<value><TAB><id>" per role:
# role ids are looked up by value. Empty without a signed-in az.
graph_sp=""
graph_roles=""
if [ -n "$has_az" ]; then
  graph_sp=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv 2>/dev/null || true)
fi
if [ -n "$graph_sp" ]; then
  graph_roles=$(az ad sp show --id "$GRAPH_APP_ID" \
    --query "appRoles[?contains(allowedMemberTypes, 'Application')].[value, id]" -o tsv 2>/dev/null || true)
fi

# Waits until Graph sees the service principal $1 (an object id or an app id); says so if it never does.
wait_visible() {
  [ -n "$graph_sp" ] || return 0
  try=1
  while :; do
    if az ad sp show --id "$1" --query id -o tsv >/dev/null 2>&1; then
      return 0
    fi
    [ "$try" -ge "$REPLICATION_TRIES" ] && break
    try=$((try + 1))
    sleep "$REPLICATION_WAIT_SECONDS"
  done
  echo "The service principal $1 is not visible in Microsoft Graph yet: a new identity or app takes a"
  echo "few minutes to replicate in Entra ID, and the calls below fail with Request_ResourceNotFound"
  echo "until it has. Run 'azd hooks run postprovision' again in a few minutes."
  echo
  return 1
}

# Prints the app-role grants of the comma-separated roles $2 to the service principal $1 (an
# object id, or empty: then the printed commands look it up from the app id $3 as $SP_ID), and
# skips the roles it already holds. Sets todo=1 when something is left to do.
print_role_grants() {
  sp="$1"
  assigned=""
  if [ -n "$graph_sp" ] && [ -n "$sp" ]; then
    assigned=$(az rest --method GET --uri "$GRAPH_ROOT/servicePrincipals/$sp/appRoleAssignments" \
      --query "value[].appRoleId" -o tsv 2>/dev/null || true)
  fi
  sp_ref="$sp"
  if [ -z "$sp" ]; then
    sp_ref="\$SP_ID"
    echo "SP_ID=\$(az ad sp show --id $3 --query id -o tsv)"
  fi
  for role in $(echo "$2" | tr ',' ' '); do
    role_id=$(printf '%s\n' "$graph_roles" | awk -v r="$role" -F '\t' '$1 == r { print $2 }' | tr -d '\r')
    if [ -n "$role_id" ] && printf '%s\n' "$assigned" | grep -qi "^$role_id"; then
      echo "# $role: already granted"
      continue
    fi
    todo=1
    echo "# $role"
    if [ -n "$graph_sp" ] && [ -n "$role_id" ] && [ -n "$sp" ]; then
      echo "az rest --method POST --uri $GRAPH_ROOT/servicePrincipals/$sp/appRoleAssignments \\"
      echo "  --headers Content-Type=application/json \\"
      echo "  --body '{\"principalId\": \"$sp\", \"resourceId\": \"$graph_sp\", \"appRoleId\": \"$role_id\"}'"
    else
      echo "GRAPH_SP_ID=\$(az ad sp show --id $GRAPH_APP_ID --query id -o tsv)"
      echo "ROLE_ID=\$(az ad sp show --id $GRAPH_APP_ID --query \"appRoles[?value=='$role'].id\" -o tsv)"
      echo "az rest --method POST --uri $GRAPH_ROOT/servicePrincipals/$sp_ref/appRoleAssignments \\"
      echo "  --headers Content-Type=application/json \\"
      echo "  --body \"{\\\"principalId\\\": \\\"$sp_ref\\\", \\\"resourceId\\\": \\\"\$GRAPH_SP_ID\\\", \\\"appRoleId\\\": \\\"\$ROLE_ID\\\"}\""
    fi
    echo
  done
}

# Prints the tenant-wide consent (AllPrincipals) of the delegated scopes $2 for the client service
# principal $1 (or $SP_ID, as above), unless the scopes are already consented.
print_scope_grant() {
  scope=$(echo "$2" | tr ',' ' ')
  if [ -n "$graph_sp" ] && [ -n "$1" ]; then
    consented=$(az rest --method GET \
      --uri "$GRAPH_ROOT/oauth2PermissionGrants?\$filter=clientId eq '$1' and resourceId eq '$graph_sp'" \
      --query "value[?consentType=='AllPrincipals'].scope" -o tsv 2>/dev/null || true)
    missing=""
    for s in $scope; do
      printf ' %s ' "$consented" | tr '\t\r\n' '   ' | grep -q " $s " || missing=1
    done
    if [ -z "$missing" ]; then
      echo "# delegated $scope: already consented for all users"
      return 0
    fi
  fi
  todo=1
  echo "# delegated $scope, for all users (the admin who registers the provider signs in through the app)"
  if [ -n "$graph_sp" ] && [ -n "$1" ]; then
    echo "az rest --method POST --uri $GRAPH_ROOT/oauth2PermissionGrants \\"
    echo "  --headers Content-Type=application/json \\"
    echo "  --body '{\"clientId\": \"$1\", \"consentType\": \"AllPrincipals\", \"resourceId\": \"$graph_sp\", \"scope\": \"$scope\"}'"
  else
    echo "GRAPH_SP_ID=\$(az ad sp show --id $GRAPH_APP_ID --query id -o tsv)"
    echo "az rest --method POST --uri $GRAPH_ROOT/oauth2PermissionGrants \\"
    echo "  --headers Content-Type=application/json \\"
    echo "  --body \"{\\\"clientId\\\": \\\"${1:-\$SP_ID}\\\", \\\"consentType\\\": \\\"AllPrincipals\\\", \\\"resourceId\\\": \\\"\$GRAPH_SP_ID\\\", \\\"scope\\\": \\\"$scope\\\"}\""
  fi
  echo
}

echo
echo "== Microsoft Graph sign-in (GRAPH_AUTH_MODE=$mode)"
if [ -n "$client" ]; then
  echo "The Viva Learning app $client ('$app_name', tenant $tenant) has the managed identity"
  echo "(service principal ${msi:-?}) as its federated credential: the worker needs no secret."
  if [ "$app_created" = "true" ] && [ "$granted" = "true" ]; then
    echo "Admin consent granted by the deployment: $app_roles (application), $app_scopes (delegated)."
  else
    app_sp=""
    if [ -n "$graph_sp" ]; then
      wait_visible "$client" && app_sp=$(az ad sp show --id "$client" --query id -o tsv 2>/dev/null || true)
    fi
    echo "Admin consent for the app: a Privileged Role Administrator or Global Administrator runs"
    echo
    todo=0
    print_role_grants "$app_sp" "$app_roles" "$client"
    print_scope_grant "$app_sp" "$app_scopes"
    if [ "$todo" = "1" ]; then
      echo "Or in the Microsoft Entra admin center: App registrations > $app_name > API permissions >"
      echo "Grant admin consent."
      if [ "$app_created" = "true" ]; then
        echo "Or, signed in as such an admin: azd env set GRANT_GRAPH_PERMISSIONS true && azd provision"
      fi
    fi
  fi
  echo
  echo "Then a Knowledge Administrator (or Global Administrator) with a Viva Learning licence registers"
  echo "the provider through this app (browser sign-in; add --credential device-code without a browser):"
  echo "  vlsync provider register --client-id $client --tenant-id $tenant --display-name ... (docs/deploy.md)"
  echo "'vlsync doctor' checks the app, its federated credential, the app token's roles and the registration."
else
  echo "No Viva Learning app registration: the deployment did not create one (CREATE_VIVA_APP=false)."
  echo "The worker pushes content as that app, with the managed identity as its only credential. An admin"
  echo "who may create apps (Application Developer or Cloud Application Administrator, or any user while"
  echo "'Users can register applications' is on) creates it:"
  echo
  echo "# 1. The app: a public client, for the admin's sign-in (browser: http://localhost; device code)"
  echo "APP_ID=\$(az ad app create --display-name \"$app_name\" --sign-in-audience AzureADMyOrg \\"
  echo "  --public-client-redirect-uris http://localhost --is-fallback-public-client true --query appId -o tsv)"
  echo "# 2. Its credential: the function app's managed identity (federated identity credential, no secret)"
  echo "az ad app federated-credential create --id \"\$APP_ID\" --parameters '{\"name\": \"function-app-managed-identity\","
  echo "  \"issuer\": \"$fic_issuer\", \"subject\": \"${msi:-<AZURE_MANAGED_IDENTITY_PRINCIPAL_ID>}\","
  echo "  \"audiences\": [\"$fic_audience\"]}'"
  echo "# 3. Its service principal"
  echo "az ad sp create --id \"\$APP_ID\""
  echo "# 4. The Microsoft Graph permissions it requires (ids looked up by value)"
  echo "for ROLE in $(echo "$app_roles" | tr ',' ' '); do"
  echo "  az ad app permission add --id \"\$APP_ID\" --api $GRAPH_APP_ID --api-permissions \\"
  echo "    \"\$(az ad sp show --id $GRAPH_APP_ID --query \"appRoles[?value=='\$ROLE'].id\" -o tsv)=Role\""
  echo "done"
  for s in $(echo "$app_scopes" | tr ',' ' '); do
    echo "az ad app permission add --id \"\$APP_ID\" --api $GRAPH_APP_ID --api-permissions \\"
    echo "  \"\$(az ad sp show --id $GRAPH_APP_ID --query \"oauth2PermissionScopes[?value=='$s'].id\" -o tsv)=Scope\""
  done
  echo "# 5. Admin consent (a Privileged Role Administrator or Global Administrator)"
  todo=0
  print_role_grants "" "$app_roles" "\$APP_ID"
  print_scope_grant "" "$app_scopes"
  echo "# 6. The worker signs in as the app from the next provision on (the template owns the app settings:"
  echo "#    one set with az functionapp config appsettings set is removed by the next azd provision)"
  echo "azd env set VIVA_APP_CLIENT_ID \"\$APP_ID\""
  echo "azd env set GRAPH_AUTH_MODE app"
  echo "azd provision"
  echo
  if [ "$mode" = "app" ]; then
    echo "WARNING: GRAPH_AUTH_MODE is app but there is no app (VIVA_APP_CLIENT_ID is empty): the worker"
    echo "cannot get a Graph token. Create the app as above, or: azd env set GRAPH_AUTH_MODE managed-identity"
  fi
fi

if [ "$mode" = "managed-identity" ]; then
  echo
  echo "== Managed-identity fallback: Graph application roles of the managed identity ($roles)"
  echo "The worker pushes content as the managed identity's own app id, not as the app that registered"
  echo "the provider. Microsoft's unpublished draft ISV guide binds a registration to the registering app"
  echo "id: if that holds, Viva Learning refuses this content (unconfirmed). Prefer the app above."
  if [ "$granted" = "true" ]; then
    echo "Granted by the deployment to the managed identity (service principal $msi)."
  elif [ -z "$msi" ]; then
    echo "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID is not set: run 'azd provision' first."
  else
    # A grant to a service principal Graph cannot see yet fails with Request_ResourceNotFound.
    wait_visible "$msi"
    echo "Not granted by this deployment (grantGraphPermissions=false). A Global Administrator or"
    echo "Privileged Role Administrator grants them to the managed identity (service principal $msi):"
    echo
    todo=0
    print_role_grants "$msi" "$roles" "$msi"
    if [ "$todo" = "1" ]; then
      echo "Or, signed in as such an admin: azd env set GRANT_GRAPH_PERMISSIONS true && azd provision"
    fi
  fi
fi

echo
echo "== Webhook secrets"
if [ -z "$secrets" ] && [ -n "${WEBHOOK_SOURCE_NAMES:-}" ]; then
  # e.g. only Canvas sources without fetch-back: Canvas signs with its published keys.
  echo "No source names a Key Vault secret (secretName, apiSecretName): nothing to check."
elif [ -z "$secrets" ]; then
  echo "No webhook source configured yet (VIVA_SOURCES). See docs/deploy.md, 'Add a webhook source':"
  echo "store the source's secret in Key Vault $vault first, then add the source."
else
  listing=""
  listed=""
  if command -v az >/dev/null 2>&1 && [ -n "$vault" ]; then
    # "<name><TAB><updated>" per secret; needs a Key Vault data role that can list secrets.
    if listing=$(az keyvault secret list --vault-name "$vault" \
      --query "[].[name, attributes.updated]" -o tsv 2>/dev/null); then
      listed=1
    fi
  fi
  if [ -z "$listed" ]; then
    echo "Could not list the secrets of Key Vault $vault (az not signed in, or no Key Vault role)."
    echo "Every source's secret must exist before its source answers; after storing or changing one:"
    echo "  $restart_cmd"
  else
    stamp=""
    missing=""
    for name in $(echo "$secrets" | tr ',' ' '); do
      updated=$(printf '%s\n' "$listing" | awk -v n="$name" -F '\t' '$1 == n { print $2 }' | tr -d '\r')
      if [ -z "$updated" ]; then
        missing="$missing $name"
      else
        stamp="${stamp:+$stamp,}$name=$updated"
      fi
    done
    for name in $missing; do
      echo "Secret '$name' is missing from Key Vault $vault: its source answers 500 (source-misconfigured)"
      echo "until you store it and restart the app:"
      echo "  az keyvault secret set --vault-name $vault --name $name --value '<the secret from the LMS: webhook secret, key, token or API secret>'"
      echo "  $restart_cmd"
    done
    if [ -n "$stamp" ] && [ "$stamp" != "$loaded" ]; then
      if az functionapp restart -g "$group" -n "$app" $on_subscription >/dev/null 2>&1; then
        echo "A source secret was created or changed since the app last read them: restarted $app,"
        echo "so the Key Vault references resolve to the current secrets now."
        if command -v azd >/dev/null 2>&1; then
          azd env set WEBHOOK_SECRETS_LOADED "$stamp" >/dev/null 2>&1 || true
        fi
      else
        echo "A source secret was created or changed since the app last read them; restart the app:"
        echo "  $restart_cmd"
      fi
    elif [ -n "$stamp" ]; then
      echo "Source secrets unchanged since the app last read them."
    fi
  fi
fi

sh "$(dirname "$0")/function-keys.sh"
exit 0
