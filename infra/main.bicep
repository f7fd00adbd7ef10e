targetScope = 'subscription'

// Viva Learning Sync: one resource group with the function app (Flex Consumption, user-assigned
// managed identity), its storage, Key Vault, monitoring and role assignments; in Entra ID, when
// allowed, the app registration the worker pushes content as (the managed identity is its
// credential) and its Microsoft Graph admin consent. `azd up` deploys it; docs/deploy.md explains
// every parameter.

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

@description('Object id of the user running azd (AZURE_PRINCIPAL_ID). It gets data roles only with allowUserIdentityPrincipal.')
param principalId string = ''

@description('Kind of principalId: User for a person, ServicePrincipal for a CI identity.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Give principalId the storage data roles (local runs against these resources) and Key Vault Secrets Officer (storing webhook secrets). Off: deploying needs neither, and the secrets can be stored by someone else.')
param allowUserIdentityPrincipal bool = false

@description('Webhook sources: an array of {name, registrationId, secretName?, apiSecretName?, source?}, where source holds the kind and its own fields of the SOURCES entry; see app/sources.bicep and docs/deploy.md. Store each secret in Key Vault before adding its source.')
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
      }
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

@minValue(0)
@maxValue(100)
@description('How often one command may go back to the queue to wait out a long Graph Retry-After (GRAPH_MAX_DEFERRALS).')
param graphMaxDeferrals int = 10

@minValue(0)
@maxValue(300)
@description('Seconds a worker trusts a registration\'s enabled state before reading it again (REGISTRATION_STATE_CACHE_SECONDS).')
param registrationStateCacheSeconds int = 10

@minValue(0)
@maxValue(720)
@description('Hours an accepted webhook delivery is remembered so that a sender\'s redelivery is answered as a duplicate (DEDUPE_HORIZON_HOURS); 0: dedupe off.')
param dedupeHorizonHours int = 72

@minValue(0)
@maxValue(3650)
@description('Days an archived webhook delivery is kept, by a lifecycle rule on the event-archive container (EVENT_ARCHIVE_RETENTION_DAYS); 0: archive off.')
param eventArchiveRetentionDays int = 30

@description('NCRONTAB schedule (UTC) of the reconcile timer (RECONCILE_SCHEDULE); it does nothing unless reconcileCatalogs names a catalog.')
param reconcileSchedule string = '0 30 3 * * *'

@description('The reconcile timer\'s catalogs per source (RECONCILE_CATALOGS), JSON: {"<source>": "catalogs/<blob>.ndjson"}; empty: the timer is off. The template makes the catalogs container and gives the function app\'s identity Storage Blob Data Reader on it (and on no other container).')
param reconcileCatalogs string = ''

@description('More app settings, {"NAME": "value"}, e.g. LMS API credentials as Key Vault references. The only place to add a setting: provisioning replaces all app settings, and the template\'s own names win over these.')
param extraAppSettings object = {}

@description('Create the Entra app registration the worker pushes content as (app/viva-app.bicep): its only credential is the managed identity, and the admin registers the learning provider through it. Needs the right to create apps (the default "Users can register applications", or Application Developer). Off: an admin creates it with the commands the postprovision hook prints and sets VIVA_APP_CLIENT_ID.')
param createVivaApp bool = true

@description('Client id of an app registration created by hand (with createVivaApp off); ignored when the deployment creates the app.')
param vivaAppClientId string = ''

@description('How the worker gets Microsoft Graph tokens (GRAPH_AUTH_MODE): app, as the Viva Learning app with the managed identity as its credential; managed-identity, the fallback, as the managed identity itself with its own Graph roles. Empty: app when there is an app, else managed-identity.')
@allowed([
  ''
  'app'
  'managed-identity'
])
param graphAuthMode string = ''

@description('Admin consent in this deployment (needs AppRoleAssignment.ReadWrite.All, DelegatedPermissionGrant.ReadWrite.All and Application.Read.All: Privileged Role Administrator or Global Administrator): for the created app, its Graph permissions; in managed-identity mode, the identity\'s Graph application roles. Otherwise the postprovision hook prints the commands for an admin.')
param grantGraphPermissions bool = false

@description('Managed-identity mode only: also grant the identity LearningAssignedCourse.ReadWrite.All and LearningSelfInitiatedCourse.ReadWrite.All (learner records). The app always requires them.')
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

// 10 keeps Graph writes near what Graph accepts (docs/deploy.md, "Scale"): each instance runs up to
// batchSize + newBatchThreshold = 24 commands at once (host.json), and Viva Learning content writes
// are limited to about 1 request/s per an unpublished Microsoft draft, so more instances mostly
// mean more throttled retries, not more throughput.
@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to (Flex Consumption: 1 to 1000).')
param maximumInstanceCount int = 10

@description('How deployments and settings changes reach running instances: RollingUpdate (drain in batches, preview) or Recreate (restart all).')
@allowed([
  'RollingUpdate'
  'Recreate'
])
param siteUpdateStrategy string = 'RollingUpdate'

@description('Private networking: a VNet with private endpoints for storage (blob, queue, table) and Key Vault, their public access off, and VNet integration for the app.')
param vnetEnabled bool = false

@description('CIDRs the webhook intake accepts calls from (the LMS\'s egress addresses, e.g. ["203.0.113.0/24"]); empty: every address.')
param intakeAllowedCidrs array = []

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
// The Viva Learning app (app/viva-app.bicep) requires the learner-record roles from the start, so
// a later feature needs no new consent, and the delegated scope the admin registers the provider
// with (POST /employeeExperience/learningProviders is delegated-only).
var vivaAppApplicationPermissions = concat(learningContentRoles, learnerRecordRoles)
var vivaAppDelegatedPermissions = [
  'LearningProvider.ReadWrite'
]
// Stable per environment: a redeploy updates the same app (uniqueName is its immutable alternate key).
var vivaAppUniqueName = 'viva-learning-sync-${resourceToken}'
var vivaAppDisplayName = 'Viva Learning Sync (${environmentName})'
// The federated credential that makes the managed identity the app's credential (quickstart
// msi-as-a-fic-secretless): the identity's tokens are issued by the tenant's v2.0 authority for
// the token-exchange audience, with the identity's principal id as subject.
var vivaAppFicIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
var vivaAppFicAudience = 'api://AzureADTokenExchange'
var vivaAppTenantId = tenant().tenantId
var hasVivaApp = createVivaApp || !empty(vivaAppClientId)
var graphAuthModeInUse = empty(graphAuthMode) ? (hasVivaApp ? 'app' : 'managed-identity') : graphAuthMode
var vivaAppClientIdInUse = createVivaApp ? vivaApp.outputs.clientId : vivaAppClientId
var vnetName = '${abbrs.networkVirtualNetworks}${resourceToken}'

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
    dedupeTableName: 'deliveries'
    archiveContainerName: 'event-archive'
    catalogContainerName: 'catalogs'
    archiveRetentionDays: eventArchiveRetentionDays
    privateNetworkOnly: vnetEnabled
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
    privateNetworkOnly: vnetEnabled
  }
}

module diagnostics 'app/diagnostics.bicep' = {
  name: 'diagnostics'
  scope: rg
  params: {
    workspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    keyVaultName: keyVault.outputs.name
    storageAccountName: storage.outputs.name
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: vnetName
    location: location
    tags: tags
    appSubnetName: '${abbrs.networkVirtualNetworksSubnets}app'
    privateEndpointSubnetName: '${abbrs.networkVirtualNetworksSubnets}private-endpoints'
  }
}

// The storage zones follow the cloud's storage suffix; Key Vault's privatelink zone has no
// environment() suffix to derive it from, so it is the public cloud's.
module privateEndpoints 'app/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'private-endpoints'
  scope: rg
  params: {
    vnetId: vnetEnabled ? network.outputs.id : ''
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
    location: location
    tags: tags
    endpoints: [
      {
        name: '${abbrs.networkPrivateEndpoints}blob-${resourceToken}'
        targetId: storage.outputs.id
        groupId: 'blob'
        dnsZoneName: 'privatelink.blob.${environment().suffixes.storage}'
      }
      {
        name: '${abbrs.networkPrivateEndpoints}queue-${resourceToken}'
        targetId: storage.outputs.id
        groupId: 'queue'
        dnsZoneName: 'privatelink.queue.${environment().suffixes.storage}'
      }
      {
        name: '${abbrs.networkPrivateEndpoints}table-${resourceToken}'
        targetId: storage.outputs.id
        groupId: 'table'
        dnsZoneName: 'privatelink.table.${environment().suffixes.storage}'
      }
      {
        name: '${abbrs.networkPrivateEndpoints}vault-${resourceToken}'
        targetId: keyVault.outputs.id
        groupId: 'vault'
        dnsZoneName: 'privatelink.vaultcore.azure.net'
      }
    ]
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

// The app registration with the managed identity as its federated credential, and its service
// principal (Microsoft Graph Bicep extension). Entra objects outlive `azd down`; a redeploy finds
// the app again by its uniqueName.
module vivaApp 'app/viva-app.bicep' = if (createVivaApp) {
  name: 'viva-app'
  scope: rg
  params: {
    uniqueName: vivaAppUniqueName
    displayName: vivaAppDisplayName
    managedIdentityPrincipalId: identity.outputs.principalId
    ficIssuer: vivaAppFicIssuer
    ficAudience: vivaAppFicAudience
    applicationPermissions: vivaAppApplicationPermissions
    delegatedPermissions: vivaAppDelegatedPermissions
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
    deploymentContainerName: storage.outputs.deploymentContainerName
    hostContainerNames: storage.outputs.hostContainerNames
    archiveContainerName: storage.outputs.archiveContainerName
    catalogContainerName: storage.outputs.catalogContainerName
    userPrincipalId: principalId
    userPrincipalType: principalType
    allowUserIdentityPrincipal: allowUserIdentityPrincipal
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
    siteUpdateStrategy: siteUpdateStrategy
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    intakeAllowedCidrs: intakeAllowedCidrs
    // The app's settings (shared/settings.py), each owned by a parameter or by the resource it
    // names. Later arguments win: extraAppSettings can add settings but never replace a source
    // secret or a fixed setting, and a secret name can never replace a fixed setting.
    appSettings: union(extraAppSettings, webhookSources.outputs.secretSettings, {
      CONTENT_QUEUE_NAME: storage.outputs.contentQueueName
      LEDGER_TABLE_NAME: storage.outputs.ledgerTableName
      REGISTRATION_STATE_CACHE_SECONDS: string(registrationStateCacheSeconds)
      DEDUPE_TABLE_NAME: storage.outputs.dedupeTableName
      DEDUPE_HORIZON_HOURS: string(dedupeHorizonHours)
      EVENT_ARCHIVE_CONTAINER: storage.outputs.archiveContainerName
      EVENT_ARCHIVE_RETENTION_DAYS: string(eventArchiveRetentionDays)
      RECONCILE_SCHEDULE: reconcileSchedule
      RECONCILE_CATALOGS: reconcileCatalogs
      SOURCES: webhookSources.outputs.sourcesJson
      WEBHOOK_MAX_BODY_BYTES: string(webhookMaxBodyBytes)
      GRAPH_BASE_URL: graphBaseUrl
      GRAPH_API_VERSION: graphApiVersion
      GRAPH_TOKEN_SCOPE: graphTokenScope
      GRAPH_TIMEOUT_SECONDS: string(graphTimeoutSeconds)
      GRAPH_MAX_INLINE_RETRY_SECONDS: string(graphMaxInlineRetrySeconds)
      GRAPH_MAX_DEFERRALS: string(graphMaxDeferrals)
      GRAPH_AUTH_MODE: graphAuthModeInUse
      VIVA_APP_CLIENT_ID: vivaAppClientIdInUse
      VIVA_APP_TENANT_ID: vivaAppTenantId
    })
  }
  // The app starts once its roles exist and, with vnetEnabled, once storage and Key Vault are
  // reachable through their private endpoints.
  dependsOn: [
    rbac
    privateEndpoints
  ]
}

// Admin consent for the created app: its application roles and, for every user, its delegated
// scope, to the app's service principal.
module vivaAppConsent 'app/graph-permissions.bicep' = if (createVivaApp && grantGraphPermissions) {
  name: 'viva-app-consent'
  scope: rg
  params: {
    principalId: createVivaApp ? vivaApp.outputs.servicePrincipalId : ''
    appRoles: vivaAppApplicationPermissions
    delegatedScopes: vivaAppDelegatedPermissions
  }
}

// Fallback mode only (GRAPH_AUTH_MODE=managed-identity): the Graph application roles of the managed
// identity itself. After the function app: creating the site takes a while, which gives a new
// identity's service principal time to replicate in Entra ID before Graph is asked to grant it a role.
module graphPermissions 'app/graph-permissions.bicep' = if (grantGraphPermissions && graphAuthModeInUse == 'managed-identity') {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    appRoles: graphAppRoles
  }
  dependsOn: [
    api
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output SERVICE_API_HOST_NAME string = api.outputs.defaultHostName
output AZURE_FUNCTION_NAME string = api.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output CONTENT_QUEUE_NAME string = storage.outputs.contentQueueName
output WEBHOOK_SECRET_NAMES string = join(webhookSources.outputs.secretNames, ',')
output WEBHOOK_SOURCE_NAMES string = join(webhookSources.outputs.sourceNames, ',')
output GRAPH_APP_ROLES string = join(graphAppRoles, ',')
output GRAPH_PERMISSIONS_GRANTED bool = grantGraphPermissions
// What the worker signs in as (the GRAPH_AUTH_MODE setting). Not output under that name: azd would
// store it in the environment, which feeds the graphAuthMode parameter and would pin the mode.
output GRAPH_AUTH_MODE_IN_USE string = graphAuthModeInUse
output VIVA_APP_CLIENT_ID string = vivaAppClientIdInUse
output VIVA_APP_TENANT_ID string = vivaAppTenantId
output VIVA_APP_CREATED bool = createVivaApp
output VIVA_APP_DISPLAY_NAME string = vivaAppDisplayName
output VIVA_APP_FIC_ISSUER string = vivaAppFicIssuer
output VIVA_APP_FIC_AUDIENCE string = vivaAppFicAudience
output VIVA_APP_GRAPH_ROLES string = join(vivaAppApplicationPermissions, ',')
output VIVA_APP_GRAPH_SCOPES string = join(vivaAppDelegatedPermissions, ',')
