// Microsoft Graph application roles for the app's managed identity (Microsoft Graph Bicep
// extension, alias in ../bicepconfig.json). The user running the deployment needs the Entra
// permissions AppRoleAssignment.ReadWrite.All and Application.Read.All (e.g. Privileged Role
// Administrator or Global Administrator); main.bicep deploys this only with grantGraphPermissions.
// Otherwise infra/hooks/postprovision.* prints the equivalent az rest calls for an admin.

extension microsoftGraphV1

@description('Object id of the managed identity\'s service principal.')
param principalId string

@description('Values of the Graph application roles to grant, e.g. LearningContent.ReadWrite.All.')
param appRoles array

// Microsoft Graph's service principal in this tenant (well-known app id).
resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

// Role ids are looked up by value, so no GUID is hard-coded here.
resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in appRoles: {
  principalId: principalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, r => r.value == role && contains(r.allowedMemberTypes, 'Application'))[0].id
}]

output grantedRoles array = appRoles
