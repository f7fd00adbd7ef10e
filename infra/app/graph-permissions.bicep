// Microsoft Graph application roles for the app's managed identity (Microsoft Graph Bicep
// extension, alias in ../bicepconfig.json). The user running the deployment needs the Entra
// permissions AppRoleAssignment.ReadWrite.All and Application.Read.All (e.g. Privileged Role
// Administrator or Global Administrator); main.bicep deploys this only with grantGraphPermissions.
// Otherwise infra/hooks/postprovision.* prints the equivalent az rest calls for an admin.
//
// The one file checkov cannot parse: its pinned pycep 0.5.1 stops at the `extension` keyword, which
// the Graph extension requires. It declares no Azure resource, only Microsoft.Graph ones, which
// checkov has no checks for; tests/infra parses it with pycep 0.7.1 and checks it on its own.
//
// A new identity's service principal can take a while to replicate in Entra ID: the grant may
// fail with "does not exist" right after the identity was created (msgraph-bicep-types#193).
// main.bicep makes this module wait for the function app, and docs/deploy.md says to re-run
// `azd provision` if it still happens.

extension microsoftGraphV1

@description('Object id of the managed identity\'s service principal.')
param principalId string

@description('Values of the Graph application roles to grant, e.g. LearningContent.ReadWrite.All.')
param appRoles array

// Microsoft Graph's service principal in this tenant (well-known app id).
resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

// Copied into a variable before filtering, as Microsoft's Graph Bicep quickstarts do
// (apps-permissions-and-grants: `var graphScopes = msGraphSP.oauth2PermissionScopes`): filtering
// the existing resource's property inside the loop body is what those samples avoid.
var graphAppRoles = graph.appRoles

// Role ids are looked up by value, so no GUID is hard-coded here.
resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in appRoles: {
  principalId: principalId
  resourceId: graph.id
  appRoleId: filter(graphAppRoles, r => r.value == role && contains(r.allowedMemberTypes, 'Application'))[0].id
}]

output grantedRoles array = appRoles
