"""Provider name -> connector class. Imported lazily so a missing SDK only hurts its users."""

from importlib import import_module

CONNECTORS = {
    "hubspot": "integrations.hubspot.connector.HubSpotConnector",
    "salesforce": "integrations.salesforce.connector.SalesforceConnector",
    "pipedrive": "integrations.pipedrive.connector.PipedriveConnector",
    "builtin": "integrations.builtin.connector.BuiltinConnector",
}


def connector_for(connection):
    module, _, name = CONNECTORS[connection.provider].rpartition(".")
    return getattr(import_module(module), name)(connection)
