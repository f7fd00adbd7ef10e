#!/bin/sh
# azd postprovision hook (after `azd provision` and `azd up`); Windows twin: postprovision.ps1.
#  1. Microsoft Graph application roles of the managed identity, unless the deployment granted them
#     (grantGraphPermissions): the exact `az rest` calls for an admin, with the ids looked up now.
#     A new identity's service principal takes a few minutes to replicate in Entra ID, so the hook
#     waits for it (about a minute) and says to run it again if it is still not visible.
#  2. Webhook secrets. App Service caches Key Vault references for up to 24 hours, so a secret
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
# How long to wait for a new identity's service principal to show up in Graph: 6 x 10 s.
REPLICATION_TRIES=6
REPLICATION_WAIT_SECONDS=10

msi="${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}"
roles="${GRAPH_APP_ROLES:-LearningContent.ReadWrite.All}"
granted="${GRAPH_PERMISSIONS_GRANTED:-false}"
vault="${AZURE_KEY_VAULT_NAME:-}"
secrets="${WEBHOOK_SECRET_NAMES:-}"
app="${SERVICE_API_NAME:-}"
group="${AZURE_RESOURCE_GROUP:-}"
loaded="${WEBHOOK_SECRETS_LOADED:-}"
restart_cmd="az functionapp restart -g $group -n $app"

echo
echo "== Microsoft Graph application roles ($roles)"
if [ "$granted" = "true" ]; then
  echo "Granted by the deployment to the managed identity (service principal $msi)."
elif [ -z "$msi" ]; then
  echo "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID is not set: run 'azd provision' first."
else
  graph_sp=""
  app_roles=""
  assigned=""
  if command -v az >/dev/null 2>&1; then
    graph_sp=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv 2>/dev/null || true)
  fi
  if [ -n "$graph_sp" ]; then
    # A grant to a service principal Graph cannot see yet fails with Request_ResourceNotFound.
    visible=""
    try=1
    while :; do
      if az ad sp show --id "$msi" --query id -o tsv >/dev/null 2>&1; then
        visible=1
        break
      fi
      [ "$try" -ge "$REPLICATION_TRIES" ] && break
      try=$((try + 1))
      sleep "$REPLICATION_WAIT_SECONDS"
    done
    if [ -z "$visible" ]; then
      echo "The managed identity's service principal ($msi) is not visible in Microsoft Graph yet:"
      echo "a new identity takes a few minutes to replicate in Entra ID, and the calls below fail with"
      echo "Request_ResourceNotFound until it has. Run 'azd hooks run postprovision' again in a few minutes."
      echo
    fi
    # "<value><TAB><id>" per application role of Microsoft Graph: role ids are looked up by value.
    app_roles=$(az ad sp show --id "$GRAPH_APP_ID" \
      --query "appRoles[?contains(allowedMemberTypes, 'Application')].[value, id]" -o tsv 2>/dev/null || true)
    assigned=$(az rest --method GET \
      --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$msi/appRoleAssignments" \
      --query "value[].appRoleId" -o tsv 2>/dev/null || true)
  fi
  echo "Not granted by this deployment (grantGraphPermissions=false). A Global Administrator or"
  echo "Privileged Role Administrator grants them to the managed identity (service principal $msi):"
  echo
  todo=0
  for role in $(echo "$roles" | tr ',' ' '); do
    role_id=$(printf '%s\n' "$app_roles" | awk -v r="$role" -F '\t' '$1 == r { print $2 }' | tr -d '\r')
    if [ -n "$role_id" ] && printf '%s\n' "$assigned" | grep -qi "^$role_id"; then
      echo "# $role: already granted"
      continue
    fi
    todo=1
    echo "# $role"
    if [ -n "$graph_sp" ] && [ -n "$role_id" ]; then
      echo "az rest --method POST --uri https://graph.microsoft.com/v1.0/servicePrincipals/$msi/appRoleAssignments \\"
      echo "  --headers Content-Type=application/json \\"
      echo "  --body '{\"principalId\": \"$msi\", \"resourceId\": \"$graph_sp\", \"appRoleId\": \"$role_id\"}'"
    else
      echo "GRAPH_SP_ID=\$(az ad sp show --id $GRAPH_APP_ID --query id -o tsv)"
      echo "ROLE_ID=\$(az ad sp show --id $GRAPH_APP_ID --query \"appRoles[?value=='$role'].id\" -o tsv)"
      echo "az rest --method POST --uri https://graph.microsoft.com/v1.0/servicePrincipals/$msi/appRoleAssignments \\"
      echo "  --headers Content-Type=application/json \\"
      echo "  --body \"{\\\"principalId\\\": \\\"$msi\\\", \\\"resourceId\\\": \\\"\$GRAPH_SP_ID\\\", \\\"appRoleId\\\": \\\"\$ROLE_ID\\\"}\""
    fi
    echo
  done
  if [ "$todo" = "1" ]; then
    echo "Or, signed in as such an admin: azd env set GRANT_GRAPH_PERMISSIONS true && azd provision"
  fi
fi

echo
echo "== Webhook secrets"
if [ -z "$secrets" ]; then
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
      echo "  az keyvault secret set --vault-name $vault --name $name --value '<whsec_ secret from the LMS>'"
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
