// Key Vault (RBAC mode) for webhook signing secrets and LMS API credentials. The app reads them
// through Key Vault references with its user-assigned identity (Key Vault Secrets User); whoever
// stores them needs Key Vault Secrets Officer (the deploying user only with
// allowUserIdentityPrincipal, see rbac.bicep). No access policies.

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

@description('Public network access off: only the private endpoint reaches the vault (main.bicep vnetEnabled).')
param privateNetworkOnly bool = false

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_42: soft delete is always on; purge protection is the enablePurgeProtection parameter (off by default so `azd down --purge` can remove a test environment; turn it on in production)
  // checkov:skip=CKV_AZURE_110: purge protection is the enablePurgeProtection parameter, see CKV_AZURE_42
  // checkov:skip=CKV_AZURE_109: the firewall denies by default with vnetEnabled (privateNetworkOnly); without a VNet the platform resolves Key Vault references over the public endpoint, and access is Entra ID + RBAC only
  // checkov:skip=CKV_AZURE_189: public network access is Disabled with vnetEnabled (privateNetworkOnly); without a VNet, Key Vault references need the public endpoint (see CKV_AZURE_109)
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
    publicNetworkAccess: privateNetworkOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: privateNetworkOnly ? 'Deny' : 'Allow'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
