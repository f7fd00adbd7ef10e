#!/bin/sh
# azd postprovision hook (after `azd provision` and `azd up`): prints what is left for people to do.
#  1. Microsoft Graph application roles of the managed identity, unless the deployment granted them
#     (grantGraphPermissions): the exact `az rest` calls for an admin, with the ids looked up now.
#  2. The webhook secrets to put into Key Vault.
# It only reads and prints, and never fails the provisioning.
set -u

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
msi="${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}"
roles="${GRAPH_APP_ROLES:-LearningContent.ReadWrite.All}"
granted="${GRAPH_PERMISSIONS_GRANTED:-false}"
vault="${AZURE_KEY_VAULT_NAME:-}"
secrets="${WEBHOOK_SECRET_NAMES:-}"
app="${SERVICE_API_NAME:-}"

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
    if [ -n "$graph_sp" ]; then
      # "<value><TAB><id>" per application role of Microsoft Graph: role ids are looked up by value.
      app_roles=$(az ad sp show --id "$GRAPH_APP_ID" \
        --query "appRoles[?contains(allowedMemberTypes, 'Application')].[value, id]" -o tsv 2>/dev/null || true)
      assigned=$(az rest --method GET \
        --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$msi/appRoleAssignments" \
        --query "value[].appRoleId" -o tsv 2>/dev/null || true)
    fi
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
  echo "No webhook source configured yet (VIVA_SOURCES). See docs/deploy.md, 'Add a webhook source'."
else
  for name in $(echo "$secrets" | tr ',' ' '); do
    echo "Secret '$name' in Key Vault $vault; if it is not set yet:"
    echo "  az keyvault secret set --vault-name $vault --name $name --value '<whsec_ secret from the LMS>'"
  done
  echo "Webhook URL of source <name>: https://$app.azurewebsites.net/api/webhooks/<name> (function key: docs/deploy.md)"
fi
exit 0
