// Azure role assignments. The app's managed identity gets the data roles it uses, each on the
// narrowest scope that works: blob roles per container, queue and table roles on the account (the
// host creates its diagnostics tables month by month, so no fixed table scope exists). The user
// running azd (principalId) gets data roles only with allowUserIdentityPrincipal, as in the
// Azure-Samples Functions quickstarts: storage roles to run the app or vlsync locally against these
// resources, Key Vault Secrets Officer to store webhook secrets.

param storageAccountName string

param applicationInsightsName string

param keyVaultName string

@description('principalId of the function app\'s user-assigned managed identity.')
param managedIdentityPrincipalId string

@description('Blob container the Flex Consumption package is deployed to: the platform writes and reads it with the identity.')
param deploymentContainerName string

@description('The Functions host\'s own containers (leases, function keys) in AzureWebJobsStorage: storage.bicep creates them.')
param hostContainerNames array

@description('Blob container of the raw event archive (EVENT_ARCHIVE_CONTAINER): the intake writes it, replay reads it.')
param archiveContainerName string

@description('Blob container of the source catalogs (RECONCILE_CATALOGS): the reconcile timer reads it.')
param catalogContainerName string

@description('Object id of the user (or CI principal) running azd.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'

@description('Give userPrincipalId the storage data roles and Key Vault Secrets Officer. Off by default: deploying needs none of them.')
param allowUserIdentityPrincipal bool = false

// Built-in role definition ids (the same in every tenant).
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

// Account-wide for the identity. Queue: trigger, release of failed messages, poison and held
// queues, the intake's enqueue. Table: ledger, the intake's dedupe table and the host's diagnostics
// tables.
var identityAccountRoleIds = [
  storageQueueDataContributor
  storageTableDataContributor
]

// The user's roles (allowUserIdentityPrincipal): what a local run of the app or of vlsync needs.
var userStorageRoleIds = [
  storageQueueDataContributor
  storageBlobDataOwner
  storageTableDataContributor
]

var assignUser = allowUserIdentityPrincipal && !empty(userPrincipalId)
var userStorageRoles = assignUser ? userStorageRoleIds : []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deploymentContainerName
}

resource archiveContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: archiveContainerName
}

resource catalogContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: catalogContainerName
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for containerName in hostContainerNames: {
  parent: blobService
  name: containerName
}]

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource identityStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in identityAccountRoleIds: {
  name: guid(storage.id, managedIdentityPrincipalId, roleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// The Flex Consumption platform writes the package (azd deploy) and reads it at start-up with the
// identity (function.bicep functionAppConfig.deployment): read and write on that container only.
resource identityDeploymentBlobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deploymentContainer.id, managedIdentityPrincipalId, storageBlobDataContributor)
  scope: deploymentContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The intake archives every accepted delivery (shared/archive.py): it writes blobs (and creates the
// container if it is missing, which the template makes unnecessary) in that container only.
resource identityArchiveBlobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(archiveContainer.id, managedIdentityPrincipalId, storageBlobDataContributor)
  scope: archiveContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The reconcile timer (shared/scheduled_reconcile.py) downloads catalog blobs and reads their
// properties and metadata (exportedAt): read-only, on that container only.
resource identityCatalogBlobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(catalogContainer.id, managedIdentityPrincipalId, storageBlobDataReader)
  scope: catalogContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage needs Storage Blob Data Owner (Functions docs, identity-based AzureWebJobsStorage),
// here only on the host's two containers.
resource identityHostBlobRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in hostContainerNames: {
  name: guid(hostContainers[i].id, managedIdentityPrincipalId, storageBlobDataOwner)
  scope: hostContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource identityMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, managedIdentityPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource identitySecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, managedIdentityPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userStorageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in userStorageRoles: {
  name: guid(storage.id, userPrincipalId, roleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}]

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(vault.id, userPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
