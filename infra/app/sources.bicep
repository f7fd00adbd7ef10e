// Webhook sources -> the app's SOURCES setting and one Key Vault reference per source secret.
// No resources: only the mapping, kept apart because its lambdas and user-defined type need a
// newer Bicep parser than checkov's (see tests/infra).

@description('One LMS webhook source.')
@sealed()
type sourceConfig = {
  // Route segment: https://<app>.azurewebsites.net/api/webhooks/<name> (letters, digits, - and _).
  name: string
  // learningProvider id of the provider registration the source's content goes to.
  registrationId: string
  // Key Vault secret holding the source's whsec_ secret(s); kebab-case, e.g. demo-webhook-secret.
  // The app setting that references it is the UPPER_SNAKE form (DEMO_WEBHOOK_SECRET).
  secretName: string
}

@description('Webhook sources, e.g. [{"name": "demo", "registrationId": "<learningProvider id>", "secretName": "demo-webhook-secret"}].')
param sources sourceConfig[] = []

@description('Key Vault that holds the source secrets.')
param keyVaultName string

var withSetting = map(sources, s => union(s, { secretSetting: toUpper(replace(s.secretName, '-', '_')) }))

@description('Value of the SOURCES app setting (see shared/settings.py).')
output sourcesJson string = string(toObject(withSetting, s => s.name, s => {
  kind: 'cloudevents'
  registrationId: s.registrationId
  secretSetting: s.secretSetting
}))

@description('App settings: secret setting name -> Key Vault reference to the secret of the same (kebab-case) name.')
output secretSettings object = toObject(withSetting, s => s.secretSetting, s => '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${s.secretName})')

output secretNames array = map(sources, s => s.secretName)
