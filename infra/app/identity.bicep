// User-assigned managed identity of the function app: host storage, the app's queue connection,
// Key Vault references, Application Insights export and Microsoft Graph all use it.

@description('Name of the user-assigned managed identity.')
param name string

param location string = resourceGroup().location

param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
@description('Object id of the identity\'s service principal: the principal of role and Graph app-role assignments.')
output principalId string = identity.properties.principalId
