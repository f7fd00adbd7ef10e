// Virtual network of the optional private networking (main.bicep vnetEnabled, like the
// Azure-Samples Functions quickstarts' VNET_ENABLED): one subnet for the function app's outbound
// VNet integration, one for the private endpoints of storage and Key Vault.

@description('Name of the virtual network.')
param name string

param location string = resourceGroup().location

param tags object = {}

// The address ranges of the Azure-Samples Functions quickstarts' vnet.bicep. Flex Consumption needs
// a subnet of its own for the integration; a /24 leaves room to scale out.
@description('Address space of the network.')
param addressPrefix string = '10.0.0.0/16'

@description('Range of the private endpoint subnet, inside addressPrefix.')
param privateEndpointSubnetPrefix string = '10.0.1.0/24'

@description('Range of the app\'s integration subnet, inside addressPrefix.')
param appSubnetPrefix string = '10.0.2.0/24'

@description('Name of the subnet the function app integrates with.')
param appSubnetName string

@description('Name of the subnet that holds the private endpoints.')
param privateEndpointSubnetName string

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
      {
        // Flex Consumption integrates with a subnet delegated to Microsoft.App/environments (the
        // subscription needs the Microsoft.App resource provider registered).
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
    ]
  }
}

output id string = vnet.id
output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
output privateEndpointSubnetId string = '${vnet.id}/subnets/${privateEndpointSubnetName}'
