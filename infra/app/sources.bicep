// Webhook sources -> the app's SOURCES setting and one Key Vault reference per secret the sources name.
// No resources: only the mapping. The element shape, per kind, is documented in docs/deploy.md
// ("Add a webhook source"); the SOURCES fields themselves in docs/sources.md.
//
// Written without lambdas (map, filter, toObject) and user-defined types, because checkov's Bicep
// parser (pycep 0.5.1) cannot read those, and a file checkov cannot parse is a file no check covers
// (tests/infra). What the lambdas would do is done instead by:
// - union() with defaults: every element gets secretName, apiSecretName ('' = none) and source ({}),
//   so an absent field is an empty value and never a missing-property error;
// - a conditional one-member object per secret ({} when the secret is absent), merged into the
//   entry with union(): an absent secret yields no member, never an empty or null one;
// - string() for all JSON: each entry is serialised whole by string() (which escapes every value:
//   quotes, backslashes, control characters), wrapped in a one-member object keyed by the source's
//   name; only the outer braces are cut off and the members joined with ','. Every element yields
//   exactly one member, so the join never leaves an empty slot;
// - flatten() of [] or [name] per element, then union() to drop repeated secret names (union keeps
//   the first occurrence of each array value; learn.microsoft.com/azure/azure-resource-manager/bicep/
//   bicep-functions-array#union): a secret used twice (Thinkific signs webhooks with its API key) is
//   one app setting, one Key Vault reference and one name for the postprovision hook.
// tests/infra/sources_twin.py is this file's Python twin; tests/infra/test_sources_parameter.py pins
// every expression here to a step of it and runs one source of each kind through it into the app.

@description('Webhook sources: an array of {name, registrationId, secretName?, apiSecretName?, source?}. name: route segment of <defaultHostName>/api/webhooks/<name> (letters, digits, - and _); registrationId: the learningProvider id; secretName: kebab-case Key Vault secret holding the webhook secret, key or token (becomes secretSetting); apiSecretName: kebab-case Key Vault secret holding the LMS API secret for fetch-back (becomes apiSecretSetting); source: the rest of the SOURCES entry (kind, default cloudevents, and the kind\'s own fields, docs/sources.md). See docs/deploy.md, "Add a webhook source".')
@metadata({
  example: [
    {
      name: 'demo'
      registrationId: '<learningProvider id>'
      secretName: 'demo-webhook-secret'
    }
    {
      name: 'moodle'
      registrationId: '<learningProvider id>'
      secretName: 'moodle-webhook-token'
      apiSecretName: 'moodle-api-token'
      source: {
        kind: 'moodle'
        apiBaseUrl: 'https://moodle.example.com'
        contentWebUrlTemplate: 'https://moodle.example.com/course/view.php?id={id}'
      }
    }
  ]
})
param sources array = []

@description('Key Vault that holds the source secrets.')
param keyVaultName string

// An element's own fields; anything else belongs inside `source`.
var elementFields = {
  name: ''
  registrationId: ''
  secretName: ''
  apiSecretName: ''
  source: {}
}
var elementDefaults = {
  secretName: ''
  apiSecretName: ''
  source: {}
}
var entries = [for s in sources: union(elementDefaults, s)]

// The app setting that references a secret is the UPPER_SNAKE form of its kebab-case name.
var secretMembers = [for e in entries: empty(e.secretName) ? {} : {
  secretSetting: toUpper(replace(e.secretName, '-', '_'))
}]
var apiSecretMembers = [for e in entries: empty(e.apiSecretName) ? {} : {
  apiSecretSetting: toUpper(replace(e.apiSecretName, '-', '_'))
}]
// A field outside elementFields (e.g. `kind` next to `name` instead of inside `source`) would be
// dropped without a word, turning a moodle source into a cloudevents one. Instead the entry gets a
// member the app refuses at start-up (SOURCES entries forbid unknown fields), named after the mistake.
var misplacedMembers = [for s in sources: (length(union(s, elementFields)) > length(elementFields)) ? {
  'VIVA_SOURCES element with fields other than name, registrationId, secretName, apiSecretName and source (the kind and its fields go inside source)': true
} : {}]

// The element's own registrationId and secret settings come last, so they win over `source`'s.
var sourceMembers = [for (e, i) in entries: string({
  '${e.name}': union({
    kind: 'cloudevents'
  }, e.source, {
    registrationId: e.registrationId
  }, secretMembers[i], apiSecretMembers[i], misplacedMembers[i])
})]
var sourcesJson = '{${join([for m in sourceMembers: substring(m, 1, length(m) - 2)], ',')}}'

// [] or [name] per element: flatten() then gives only the names that are there.
var webhookSecretNames = [for e in entries: empty(e.secretName) ? [] : [
  e.secretName
]]
var apiSecretNames = [for e in entries: empty(e.apiSecretName) ? [] : [
  e.apiSecretName
]]
var secretNames = union(flatten(webhookSecretNames), flatten(apiSecretNames))
var secretSettingNames = [for n in secretNames: toUpper(replace(n, '-', '_'))]
var secretSettingMembers = [for (n, i) in secretNames: string({
  '${secretSettingNames[i]}': '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${n})'
})]
var secretSettingsJson = '{${join([for m in secretSettingMembers: substring(m, 1, length(m) - 2)], ',')}}'

@description('Value of the SOURCES app setting (see shared/settings.py).')
output sourcesJson string = sourcesJson

@description('App settings: secret setting name -> Key Vault reference to the secret of the same (kebab-case) name, one per distinct secret.')
output secretSettings object = json(secretSettingsJson)

@description('Every Key Vault secret the sources name (webhook and API secrets), each once: the postprovision hook checks them.')
output secretNames array = secretNames

output sourceNames array = [for s in sources: s.name]
