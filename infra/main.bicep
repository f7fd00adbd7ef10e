targetScope = 'subscription'

// Viva Learning Sync: one resource group with the function app (Flex Consumption, user-assigned
// managed identity), its storage, Key Vault, monitoring, role assignments and, when allowed, the
// Microsoft Graph application roles. `azd up` deploys it; docs/deploy.md explains every parameter.

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: hashed into resource names and set as the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of every resource; limited to regions that offer the Flex Consumption plan.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the user running azd (AZURE_PRINCIPAL_ID): storage data roles and Key Vault Secrets Officer. Empty: none.')
param principalId string = ''

@description('Kind of principalId: User for a person, ServicePrincipal for a CI identity.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Webhook sources: an array of {name, registrationId, secretName}; see app/sources.bicep and docs/deploy.md.')
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

@description('Microsoft Graph root (GRAPH_BASE_URL).')
param graphBaseUrl string = 'https://graph.microsoft.com'

@description('Microsoft Graph API version (GRAPH_API_VERSION).')
@allowed([
  'v1.0'
  'beta'
])
param graphApiVersion string = 'v1.0'

@description('Scope the managed identity asks a Graph token for (GRAPH_TOKEN_SCOPE).')
param graphTokenScope string = 'https://graph.microsoft.com/.default'

@minValue(1)
@maxValue(300)
@description('Timeout of one Graph call in seconds (GRAPH_TIMEOUT_SECONDS).')
param graphTimeoutSeconds int = 30

@minValue(0)
@maxValue(120)
@description('Longest total wait retrying one command inside an invocation (GRAPH_MAX_INLINE_RETRY_SECONDS).')
param graphMaxInlineRetrySeconds int = 10

@minValue(1)
@maxValue(104857600)
@description('Largest webhook body accepted, in bytes (WEBHOOK_MAX_BODY_BYTES).')
param webhookMaxBodyBytes int = 1048576

@description('Grant the Graph application roles to the managed identity in this deployment (needs AppRoleAssignment.ReadWrite.All and Application.Read.All). Otherwise the postprovision hook prints the commands for an admin.')
param grantGraphPermissions bool = false

@description('Also grant LearningAssignedCourse.ReadWrite.All and LearningSelfInitiatedCourse.ReadWrite.All (learner records).')
param grantLearnerRecordRoles bool = false

@description('Key Vault purge protection (recommended in production; irreversible, and `azd down --purge` cannot purge the vault).')
param keyVaultEnablePurgeProtection bool = false

@description('Replication of the storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Memory of one Flex Consumption instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@maxValue(1000)
@description('Most instances the app scales out to.')
param maximumInstanceCount int = 100

// Optional name overrides; empty means the abbreviation + a hash of subscription, environment and region.
param resourceGroupName string = ''
param functionAppName string = ''
param storageAccountName string = ''
param keyVaultName string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(appName, 32)}-${take(toLower(uniqueString(appName, resourceToken)), 7)}'
var learningContentRoles = [
  'LearningContent.ReadWrite.All'
]
var learnerRecordRoles = [
  'LearningAssignedCourse.ReadWrite.All'
  'LearningSelfInitiatedCourse.ReadWrite.All'
]
var graphAppRoles = grantLearnerRecordRoles ? concat(learningContentRoles, learnerRecordRoles) : learningContentRoles

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    contentQueueName: 'content-commands'
    ledgerTableName: 'ledger'
    archiveContainerName: 'event-archive'
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    enablePurgeProtection: keyVaultEnablePurgeProtection
  }
}

module webhookSources 'app/sources.bicep' = {
  name: 'sources'
  scope: rg
  params: {
    sources: sources
    keyVaultName: keyVault.outputs.name
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    managedIdentityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module api 'app/function.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: appName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    pythonVersion: '3.11'
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    // The app's settings (shared/settings.py). The source secret settings come first so that a
    // secret name can never replace one of the fixed settings.
    appSettings: union(webhookSources.outputs.secretSettings, {
      CONTENT_QUEUE_NAME: storage.outputs.contentQueueName
      LEDGER_TABLE_NAME: storage.outputs.ledgerTableName
      REGISTRATION_STATE_CACHE_SECONDS: '10'
      SOURCES: webhookSources.outputs.sourcesJson
      WEBHOOK_MAX_BODY_BYTES: string(webhookMaxBodyBytes)
      GRAPH_BASE_URL: graphBaseUrl
      GRAPH_API_VERSION: graphApiVersion
      GRAPH_TOKEN_SCOPE: graphTokenScope
      GRAPH_TIMEOUT_SECONDS: string(graphTimeoutSeconds)
      GRAPH_MAX_INLINE_RETRY_SECONDS: string(graphMaxInlineRetrySeconds)
      GRAPH_MAX_DEFERRALS: '10'
    })
  }
  dependsOn: [
    rbac
  ]
}

module graphPermissions 'app/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    appRoles: graphAppRoles
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_FUNCTION_NAME string = api.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output CONTENT_QUEUE_NAME string = storage.outputs.contentQueueName
output WEBHOOK_SECRET_NAMES string = join(webhookSources.outputs.secretNames, ',')
output GRAPH_APP_ROLES string = join(graphAppRoles, ',')
output GRAPH_PERMISSIONS_GRANTED bool = grantGraphPermissions
