// The Entra app registration the worker pushes content as (issue 13). Microsoft Graph Bicep
// extension, alias in ../bicepconfig.json; main.bicep deploys it with createVivaApp (the default).
//
// Why an app and not the managed identity alone: Microsoft's unpublished draft ISV guide for Viva
// Learning (microsoftgraph/microsoft-graph-docs PR 17789) says a provider registration is bound to
// the app id that registered it and that content is pushed "with application permissions" as that
// same app. Registering a provider is delegated-only (LearningProvider.ReadWrite; "Application: Not
// supported" on the learningProvider create page), so a person signs in through an app to do it;
// that app must then also be the one the worker pushes as. A managed identity cannot be signed in
// to by a person, so the worker uses this app instead, with the user-assigned managed identity as
// the app's federated identity credential: no secret or certificate anywhere.
//
// Follows the Microsoft Graph Bicep quickstart msi-as-a-fic-secretless
// (microsoftgraph/msgraph-bicep-types, quickstart-templates/msi-as-a-fic-secretless/main.bicep):
// Microsoft.Graph/applications@v1.0 with a nested federatedIdentityCredentials@v1.0 named
// '<uniqueName>/<name>', audience api://AzureADTokenExchange, issuer
// '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0', subject the identity's
// principalId; then Microsoft.Graph/servicePrincipals@v1.0 from the app's appId. The permission ids
// are looked up by value from Microsoft Graph's service principal (quickstart
// apps-permissions-and-grants: `var graphScopes = msGraphSP.oauth2PermissionScopes` and filter()),
// never hard-coded.
//
// Managed identity as a federated identity credential is generally available for user-assigned
// identities (Microsoft Entra identity blog, 8 May 2025); an app holds at most 20 federated identity
// credentials (Learn: "Configure an application to trust a managed identity").
//
// Deploying it needs the right to create apps: the Entra default "Users can register applications",
// or Application Developer / Cloud Application Administrator. Declaring required permissions grants
// nothing: admin consent is app/graph-permissions.bicep (grantGraphPermissions) or an admin's
// commands (infra/hooks/postprovision.*). Like app/graph-permissions.bicep this file cannot be read
// by checkov (the `extension` keyword) and declares only Microsoft.Graph resources; tests/infra
// parses and checks it with pycep 0.7.1.

extension microsoftGraphV1

@description('Immutable alternate key of the app registration, stable per environment (a redeploy updates the same app).')
param uniqueName string

@description('Display name of the app registration.')
param displayName string

@description('Object (principal) id of the user-assigned managed identity: the subject of the federated credential.')
param managedIdentityPrincipalId string

@description('Issuer of the federated credential: the tenant\'s v2.0 authority (main.bicep).')
param ficIssuer string

@description('Audience of the federated credential: api://AzureADTokenExchange in the public cloud.')
param ficAudience string

@description('Values of the Microsoft Graph application permissions (app roles) the app requires.')
param applicationPermissions array

@description('Values of the Microsoft Graph delegated permissions (scopes) the app requires.')
param delegatedPermissions array

@description('Public-client redirect URIs: the admin\'s browser sign-in (MSAL listens on http://localhost:<any port>).')
param publicClientRedirectUris array = [
  'http://localhost'
]

var graphAppId = '00000003-0000-0000-c000-000000000000'

// Microsoft Graph's service principal in this tenant (well-known app id).
resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// Copied into variables before filtering, as the quickstarts do.
var graphAppRoles = graph.appRoles
var graphScopes = graph.oauth2PermissionScopes
var requiredRoles = filter(graphAppRoles, r => contains(applicationPermissions, r.value) && contains(r.allowedMemberTypes, 'Application'))
var requiredScopes = filter(graphScopes, s => contains(delegatedPermissions, s.value))

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  description: 'Viva Learning Sync: pushes learning content to Microsoft Graph as this app (its credential is the function app\'s user-assigned managed identity), and is the app an admin signs in through to register the learning provider.'
  signInAudience: 'AzureADMyOrg'
  // Public client: `vlsync provider register` signs the admin in from a terminal, in the browser
  // (redirect http://localhost) or with a device code, which needs public client flows allowed.
  isFallbackPublicClient: true
  publicClient: {
    redirectUris: publicClientRedirectUris
  }
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: concat(map(requiredRoles, r => {
        id: r.id
        type: 'Role'
      }), map(requiredScopes, s => {
        id: s.id
        type: 'Scope'
      }))
    }
  ]

  // The managed identity as the app's credential (msi-as-a-fic). The name is the FIC's alternate key.
  resource managedIdentityCredential 'federatedIdentityCredentials@v1.0' = {
    name: '${app.uniqueName}/function-app-managed-identity'
    description: 'The function app\'s user-assigned managed identity signs in as this app (no secret).'
    audiences: [
      ficAudience
    ]
    issuer: ficIssuer
    subject: managedIdentityPrincipalId
  }
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
}

@description('Application (client) id: VIVA_APP_CLIENT_ID.')
output clientId string = app.appId
@description('Object id of the app registration.')
output objectId string = app.id
@description('Object id of the app\'s service principal: the principal of its admin consent.')
output servicePrincipalId string = servicePrincipal.id
@description('Application permissions found in Graph and required; fewer than asked means a name did not match.')
output requiredApplicationPermissions array = map(requiredRoles, r => r.value)
@description('Delegated permissions found in Graph and required.')
output requiredDelegatedPermissions array = map(requiredScopes, s => s.value)
