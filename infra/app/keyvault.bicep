// Key Vault (RBAC mode) for webhook signing secrets and LMS API credentials. The app reads them
// through Key Vault references with its user-assigned identity (Key Vault Secrets User); the
// deploying user gets Key Vault Secrets Officer to set them (rbac.bicep). No access policies.

@description('Globally unique Key Vault name (3-24 letters, digits and hyphens).')
param name string

param location string = resourceGroup().location

param tags object = {}

@description('Purge protection: a deleted vault or secret cannot be purged before the retention ends. Irreversible once on; `azd down --purge` cannot purge such a vault.')
param enablePurgeProtection bool = false

@minValue(7)
@maxValue(90)
@description('Days a deleted vault or secret can be recovered.')
param softDeleteRetentionInDays int = 7

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_42: soft delete is always on; purge protection is the enablePurgeProtection parameter (off by default so `azd down --purge` can remove a test environment; turn it on in production)
  // checkov:skip=CKV_AZURE_110: purge protection is the enablePurgeProtection parameter, see CKV_AZURE_42
  // checkov:skip=CKV_AZURE_109: no VNet in this template; the platform resolves Key Vault references over the public endpoint, and access is Entra ID + RBAC only
  // checkov:skip=CKV_AZURE_189: same as CKV_AZURE_109: Key Vault references from a function app without VNet integration need the public endpoint
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Purge protection can only be switched on (true) or left unset (null), never set to false.
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
