// The function app on a Flex Consumption (FC1) plan, Python, running as the user-assigned
// identity. Every connection is identity-based: the settings below carry endpoints and the
// identity's client id, never a key or a connection string.
//
// Function keys are not declared here. Neither Bicep resource for them works at provision time on
// Flex Consumption: Microsoft.Web/sites/functions/keys needs the function to exist, and `azd up`
// provisions before it deploys the code; Microsoft.Web/sites/host/functionKeys goes through the
// host runtime, which fails for a Flex app without code (Azure/azure-functions-host#11379) and is
// flaky right after the site is created (Azure/bicep-types-az#1356), and a host key would open
// every function. infra/hooks/function-keys.sh creates one function-level key per source on
// receive_webhook after deployment instead (docs/deploy.md).

@description('Name of the function app (the <app> in SERVICE_API_NAME).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

param location string = resourceGroup().location

@description('Tags of the plan; the site adds azd-service-name.')
param tags object = {}

@description('azure.yaml service this site is deployed by (azd finds the site by this tag).')
param serviceName string = 'api'

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

param storageAccountName string

@description('Blob container the app package is deployed to.')
param deploymentContainerName string

param applicationInsightsName string

@allowed([
  '3.10'
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.11'

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// Flex Consumption accepts 1 to 1000 ("The lowest maximum scale is currently 1", Flex Consumption
// plan docs); docs/deploy.md explains the default of main.bicep.
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 10

@description('Zone redundancy of the plan (only in regions where Flex Consumption supports it).')
param zoneRedundant bool = false

// Rolling updates drain instances in batches instead of restarting them all, so a deployment or a
// settings change does not cut off queue work in flight. It is a public preview configured with
// functionAppConfig.siteUpdateStrategy (API version 2024-11-01 or later, Microsoft Learn "Site
// update strategies in Flex Consumption"); whether every Flex region accepts it is not verified
// here, so Recreate stays available.
@allowed([
  'RollingUpdate'
  'Recreate'
])
param siteUpdateStrategy string = 'RollingUpdate'

@description('Subnet (delegated to Microsoft.App/environments) for outbound VNet integration; empty: none.')
param virtualNetworkSubnetId string = ''

@description('CIDRs allowed to call the app (the intake); empty: every address. The deployment (SCM) site keeps its own, open rules so azd deploy still works.')
param intakeAllowedCidrs array = []

@description('The app\'s own settings (main.bicep); the telemetry and identity-based settings below win over them.')
param appSettings object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Host storage and the app's named connection (shared/settings.py STORAGE_CONNECTION) through the
// identity. FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION and WEBSITE_RUN_FROM_PACKAGE are
// deprecated on Flex Consumption and deliberately absent.
var identitySettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  LearningSyncStorage__credential: 'managedidentity'
  LearningSyncStorage__clientId: identityClientId
  LearningSyncStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  LearningSyncStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  LearningSyncStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AZURE_CLIENT_ID: identityClientId
}

// One telemetry pipeline: host.json sets "telemetryMode": "OpenTelemetry", and
// PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY lets the Python worker export its own OpenTelemetry
// logs and traces instead of the host forwarding each log line as a second copy; host and worker
// spans then share one trace. APPLICATIONINSIGHTS_AUTHENTICATION_STRING makes the export use Entra
// ID (local auth is off on the component). tests/infra keeps host.json and this setting together.
var telemetrySettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

var restrictIntake = !empty(intakeAllowedCidrs)
var intakeRestrictions = [for (cidr, i) in intakeAllowedCidrs: {
  name: 'source-${i}'
  ipAddress: cidr
  action: 'Allow'
  priority: 100 + i
}]

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter; Flex Consumption offers it only in some regions
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-11-01' = {
  // checkov:skip=CKV_AZURE_222: the webhook endpoint must be reachable by the LMS over the internet; calls need a function key and a valid HMAC signature, and intakeAllowedCidrs limits the callers where their addresses are known
  // checkov:skip=CKV_AZURE_17: LMS webhook senders do not present client certificates; see CKV_AZURE_222 for how calls are authenticated
  // checkov:skip=CKV_AZURE_212: Flex Consumption manages instances and scales to zero; there is no minimum instance count for failover
  // checkov:skip=CKV_AZURE_213: the app has no health endpoint; Flex Consumption scales instances to zero and manages their health itself
  // checkov:skip=CKV_AZURE_78: Flex Consumption rejects siteConfig.ftpsState (ARM error 51021); code is deployed only through the blob container below
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: !empty(virtualNetworkSubnetId) ? virtualNetworkSubnetId : null
    // Flex Consumption rejects several classic siteConfig properties (ARM error 51021: linuxFxVersion,
    // ftpsState, netFrameworkVersion, use32BitWorkerProcess, alwaysOn, ...): runtime and scale live
    // in functionAppConfig. Keep this to properties Flex accepts. Access restrictions on Flex are
    // documented for the Networking blade; their ARM form here is not verified against Flex.
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      ipSecurityRestrictions: restrictIntake ? intakeRestrictions : null
      ipSecurityRestrictionsDefaultAction: restrictIntake ? 'Deny' : 'Allow'
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictionsDefaultAction: 'Allow'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
      siteUpdateStrategy: {
        type: siteUpdateStrategy
      }
    }
  }
}

// An appsettings resource: checkov evaluates it with the checks of the web config resource
// (sites/config 'web'), whose properties it does not have. It replaces every app setting on each
// `azd provision`, so every setting is owned here: main.bicep's parameters, the sources and the
// extraAppSettings parameter; a setting added in the portal or with the CLI is removed.
resource siteSettings 'Microsoft.Web/sites/config@2024-11-01' = {
  // checkov:skip=CKV_AZURE_13: web-config check on appsettings; App Service Authentication is off on purpose: LMS webhooks cannot sign in with Entra ID (function key + HMAC instead)
  // checkov:skip=CKV_AZURE_63: web-config check on appsettings; logs go to Application Insights (HTTP file-system logging does not apply to Flex Consumption)
  // checkov:skip=CKV_AZURE_65: web-config check on appsettings; detailed error pages are an App Service file-system log, not used on Flex Consumption
  // checkov:skip=CKV_AZURE_66: web-config check on appsettings; failed request tracing is an App Service file-system log, not used on Flex Consumption
  // checkov:skip=CKV_AZURE_80: web-config check on appsettings; the app is Python, not .NET
  // checkov:skip=CKV_AZURE_88: web-config check on appsettings; Flex Consumption apps have no Azure Files content share
  // checkov:skip=CKV_AZURE_222: web-config check on appsettings; public network access is set on the site (see the site's CKV_AZURE_222)
  parent: site
  name: 'appsettings'
  properties: union(appSettings, telemetrySettings, identitySettings)
}

output name string = site.name
output id string = site.id
@description('The app\'s host name: Flex Consumption apps can get a unique regional host name, so never build it from the app name.')
output defaultHostName string = site.properties.defaultHostName
output uri string = 'https://${site.properties.defaultHostName}'
