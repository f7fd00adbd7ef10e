// Microsoft Graph admin consent for one service principal (Microsoft Graph Bicep extension, alias in
// ../bicepconfig.json): application roles as appRoleAssignedTo and, when asked, delegated scopes as
// one tenant-wide oauth2PermissionGrant (consentType AllPrincipals), as the quickstarts
// msi-as-a-fic-secretless (app roles) and apps-permissions-and-grants/appGrantScopes.bicep
// (delegated grant) of microsoftgraph/msgraph-bicep-types do. main.bicep deploys it with
// grantGraphPermissions, for the Viva Learning app's service principal (app/viva-app.bicep) and,
// in the managed-identity fallback mode only, for the managed identity's. The user running the
// deployment needs AppRoleAssignment.ReadWrite.All, DelegatedPermissionGrant.ReadWrite.All and
// Application.Read.All (e.g. Privileged Role Administrator or Global Administrator). Otherwise
// infra/hooks/postprovision.* prints the equivalent az rest calls for an admin.
//
// checkov cannot parse this file: its pinned pycep 0.5.1 stops at the `extension` keyword, which
// the Graph extension requires. It declares no Azure resource, only Microsoft.Graph ones, which
// checkov has no checks for; tests/infra parses it with pycep 0.7.1 and checks it on its own.
//
// A new identity's service principal can take a while to replicate in Entra ID: the grant may
// fail with "does not exist" right after the identity was created (msgraph-bicep-types#193).
// main.bicep makes the managed identity's grant wait for the function app, and docs/deploy.md says
// to re-run `azd provision` if it still happens.

extension microsoftGraphV1

@description('Object id of the service principal to consent for (the app\'s, or the managed identity\'s).')
param principalId string

@description('Values of the Graph application roles to grant, e.g. LearningContent.ReadWrite.All.')
param appRoles array

@description('Values of the Graph delegated permissions to consent for every user, e.g. LearningProvider.ReadWrite; empty: none.')
param delegatedScopes array = []

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

// Admin consent for the delegated scopes, for all users (the admin who registers the provider
// signs in through this app). Granting a scope needs no id: the grant names the scope values.
resource delegatedGrant 'Microsoft.Graph/oauth2PermissionGrants@v1.0' = if (!empty(delegatedScopes)) {
  clientId: principalId
  resourceId: graph.id
  consentType: 'AllPrincipals'
  scope: join(delegatedScopes, ' ')
}

output grantedRoles array = appRoles
output grantedScopes array = delegatedScopes
