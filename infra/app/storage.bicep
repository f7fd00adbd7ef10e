// Storage account of the host (AzureWebJobsStorage) and of the app's own connection
// (LearningSyncStorage): queues, ledger and dedupe tables, archive container (with its retention
// rule), the Flex Consumption
// deployment container and the host's own containers. Entra ID only: shared keys are off, so no
// connection string can work. With privateNetworkOnly the account is reachable only through the
// private endpoints of private-endpoints.bicep.

@description('Globally unique storage account name (3-24 lower-case letters and digits).')
param name string

param location string = resourceGroup().location

param tags object = {}

@description('Replication of the account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Blob container that Flex Consumption deploys the app package from.')
param deploymentContainerName string

@description('Queue of content commands (CONTENT_QUEUE_NAME); the host parks failed messages in <name>-poison.')
param contentQueueName string = 'content-commands'

@description('Table of the delivery ledger.')
param ledgerTableName string = 'ledger'

@description('Table of accepted webhook deliveries, for dedupe (DEDUPE_TABLE_NAME).')
param dedupeTableName string = 'deliveries'

@description('Blob container of archived webhook events.')
param archiveContainerName string = 'event-archive'

@description('Blob container of the source catalogs the reconcile timer reads (RECONCILE_CATALOGS names blobs in it).')
param catalogContainerName string = 'catalogs'

@minValue(0)
@maxValue(3650)
@description('Days an archived webhook delivery is kept (EVENT_ARCHIVE_RETENTION_DAYS); 0: the archive is off and no retention rule is made.')
param archiveRetentionDays int = 30

@description('Days deleted blobs and containers can be restored.')
param deleteRetentionDays int = 7

@description('Public network access off: only private endpoints reach the account (main.bicep vnetEnabled).')
param privateNetworkOnly bool = false

// The Functions host keeps its leases (azure-webjobs-hosts) and its function keys
// (azure-webjobs-secrets) in blob containers of AzureWebJobsStorage and creates them when they are
// missing. They are created here instead, because the identity's blob role is granted per
// container (rbac.bicep) and a role cannot be assigned on a container that does not exist yet.
var hostContainerNames = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

var poisonQueueName = '${contentQueueName}-poison'
var heldQueueName = '${contentQueueName}-held'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the default action is Deny with vnetEnabled (privateNetworkOnly); without a VNet, Flex Consumption reaches storage over its public endpoint, where shared keys are off and every request needs an Entra ID token and a data role
  // checkov:skip=CKV_AZURE_59: public network access is Disabled with vnetEnabled (privateNetworkOnly); otherwise see CKV_AZURE_35: Entra ID only (allowSharedKeyAccess false, no public blob access)
  // checkov:skip=CKV_AZURE_206: replication is the storageSkuName parameter (ZRS, GRS, GZRS allowed); LRS is the low-cost default
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: privateNetworkOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: privateNetworkOnly ? 'Deny' : 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource archiveContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: archiveContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The LMS exports (or an operator) upload each source's catalog here; the reconcile timer only reads it.
resource catalogContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: catalogContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The archive's retention: a lifecycle management rule deletes its blobs a number of days after they
// were written (Table and Blob storage have no per-item time-to-live). The platform runs the rules
// about once a day, so a blob may outlive the retention by a day or two, and blob soft delete keeps a
// deleted blob restorable for deleteRetentionDays more. An account has one policy, named 'default'.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (archiveRetentionDays > 0) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'event-archive-retention'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${archiveContainer.name}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterCreationGreaterThan: archiveRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in hostContainerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource contentQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: contentQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: poisonQueueName
}

// Commands of a disabled registration wait here until `vlsync provider enable` moves them back.
resource heldQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: heldQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

resource dedupeTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: dedupeTableName
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
output contentQueueName string = contentQueue.name
output poisonQueueName string = poisonQueue.name
output heldQueueName string = heldQueue.name
output ledgerTableName string = ledgerTable.name
output dedupeTableName string = dedupeTable.name
output archiveContainerName string = archiveContainer.name
output catalogContainerName string = catalogContainer.name
output hostContainerNames array = [for (containerName, i) in hostContainerNames: hostContainers[i].name]
