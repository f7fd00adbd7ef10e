// Webhook sources -> the app's SOURCES setting and one Key Vault reference per source secret.
// No resources: only the mapping. It is written with for-expressions, string() and json() instead of
// lambdas (map/toObject) and a user-defined type, because checkov's Bicep parser (pycep 0.5.1)
// cannot read those, and a file checkov cannot parse is a file no check covers (tests/infra).

@description('Webhook sources: [{"name": "demo", "registrationId": "<learningProvider id>", "secretName": "demo-webhook-secret"}]. name: route segment of <defaultHostName>/api/webhooks/<name> (letters, digits, - and _); registrationId: the learningProvider id; secretName: kebab-case Key Vault secret holding the source\'s whsec_ secret(s).')
@metadata({
  example: [
    {
      name: 'demo'
      registrationId: '<learningProvider id>'
      secretName: 'demo-webhook-secret'
    }
  ]
})
param sources array = []

@description('Key Vault that holds the source secrets.')
param keyVaultName string

// The app setting that references a secret is the UPPER_SNAKE form of its kebab-case name.
var secretSettingNames = [for s in sources: toUpper(replace(s.secretName, '-', '_'))]

// Bicep cannot build an object with computed keys from an array without lambdas. Each entry is
// therefore serialised on its own as a one-member object (string() does the JSON escaping), its
// outer braces are cut off, and the members are joined into one JSON object.
var sourceMembers = [for (s, i) in sources: string({
  '${s.name}': {
    kind: 'cloudevents'
    registrationId: s.registrationId
    secretSetting: secretSettingNames[i]
  }
})]
var secretMembers = [for (s, i) in sources: string({
  '${secretSettingNames[i]}': '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${s.secretName})'
})]
var sourcesJson = '{${join([for m in sourceMembers: substring(m, 1, length(m) - 2)], ',')}}'
var secretSettingsJson = '{${join([for m in secretMembers: substring(m, 1, length(m) - 2)], ',')}}'

@description('Value of the SOURCES app setting (see shared/settings.py).')
output sourcesJson string = sourcesJson

@description('App settings: secret setting name -> Key Vault reference to the secret of the same (kebab-case) name.')
output secretSettings object = json(secretSettingsJson)

output secretNames array = [for s in sources: s.secretName]

output sourceNames array = [for s in sources: s.name]
