// Private endpoints of the optional private networking: one per target (storage blob, queue and
// table, Key Vault), each with its private DNS zone linked to the virtual network, so the app's
// usual host names resolve to private addresses inside the network.

@description('Virtual network the DNS zones are linked to.')
param vnetId string

@description('Subnet of the private endpoints.')
param subnetId string

param location string = resourceGroup().location

param tags object = {}

@description('[{name, targetId, groupId, dnsZoneName}]: endpoint name, resource id, private link sub-resource (blob, queue, table, vault) and its privatelink DNS zone.')
param endpoints array

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for endpoint in endpoints: {
  name: endpoint.dnsZoneName
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (endpoint, i) in endpoints: {
  parent: zones[i]
  name: 'link-${endpoint.groupId}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in endpoints: {
  name: endpoint.name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.targetId
          groupIds: [
            endpoint.groupId
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.groupId
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]
