#!/bin/sh
# One function key per webhook source on receive_webhook: the azd postdeploy hook, and the last step
# of postprovision.sh (a source added by `azd provision` alone). Windows twin: function-keys.ps1.
#
# A key is created only when the source has none, never replaced: re-running the hook must not
# rotate a key an LMS already uses. Keys are function-level, not host keys: they open the intake
# and nothing else. They are not Bicep resources because `azd up` provisions before receive_webhook
# exists (see infra/app/function.bicep). The hook prints how to read a key, never a key itself.
# It never fails the deployment: every problem becomes a message with the command to run.
set -u

# azd's subscription, which need not be az's default one (AZURE_SUBSCRIPTION_ID is azd's own variable).
subscription="${AZURE_SUBSCRIPTION_ID:-}"
on_subscription="${subscription:+--subscription $subscription}"

FUNCTION=receive_webhook
app="${SERVICE_API_NAME:-}"
group="${AZURE_RESOURCE_GROUP:-}"
host="${SERVICE_API_HOST_NAME:-}"
sources="${WEBHOOK_SOURCE_NAMES:-}"
keys_cmd="az functionapp function keys"
target="-g $group -n $app --function-name $FUNCTION"

echo
echo "== Function keys (one per source)"
if [ -z "$sources" ]; then
  echo "No webhook source configured yet (VIVA_SOURCES)."
  exit 0
fi

existing=""
listed=""
if command -v az >/dev/null 2>&1; then
  # The key names of receive_webhook, one per line; fails while the function is not deployed.
  if existing=$(az functionapp function keys list -g "$group" -n "$app" --function-name "$FUNCTION" $on_subscription \
    --query "keys(@)" -o tsv 2>/dev/null); then
    listed=1
  fi
fi

for source in $(echo "$sources" | tr ',' ' '); do
  if [ -z "$listed" ]; then
    echo "# $source: $FUNCTION is not deployed yet (or az is not signed in); after 'azd deploy':"
    echo "  $keys_cmd set $target --key-name $source"
  elif printf '%s\n' "$existing" | tr -d '\r' | grep -qx "$source"; then
    echo "# $source: key exists"
  elif az functionapp function keys set -g "$group" -n "$app" --function-name "$FUNCTION" \
    --key-name "$source" $on_subscription >/dev/null 2>&1; then
    echo "# $source: key created"
  else
    echo "# $source: could not create the key; create it with:"
    echo "  $keys_cmd set $target --key-name $source"
  fi
done

echo
echo "Each LMS calls https://$host/api/webhooks/<source> with its key in the x-functions-key header."
# JMESPath needs the quotes for names with '-'.
echo "Read a source's key:   $keys_cmd list $target --query '\"<source>\"' -o tsv"
echo "Revoke a source's key: $keys_cmd delete $target --key-name <source>"
exit 0
