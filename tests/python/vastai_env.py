"""The official Vast client (vastai==1.9.1) and one endpoint, set up from the environment,
for the scripts that drive it: VESPA_AUTOSCALER_URL (no trailing slash), VESPA_ENDPOINT
(endpoint name), VESPA_API_KEY, optional VESPA_ENDPOINT_ID (int, default 1; not sent on the
request path).

Only deviation from stock usage: the client's SSL context is pre-set, because its first call
would otherwise download Vast's root certificate from console.vast.ai (client.py,
_ServerlessBase.get_ssl_context)."""
import os
import ssl

from vastai.serverless.client.client import Serverless
from vastai.serverless.client.endpoint import Endpoint


def client_and_endpoint():
    """(client, endpoint, description): use the client as `async with client:`."""
    url = os.environ["VESPA_AUTOSCALER_URL"]
    name = os.environ["VESPA_ENDPOINT"]
    key = os.environ["VESPA_API_KEY"]
    eid = int(os.environ.get("VESPA_ENDPOINT_ID", "1"))
    client = Serverless(key, autoscaler_url=url)
    # get_ssl_context() downloads the Vast root cert only while _ssl_context is None.
    client._ssl_context = ssl.create_default_context()
    endpoint = Endpoint(client, name=name, id=eid, api_key=key)  # no console listing
    return client, endpoint, f"autoscaler={url} endpoint={name!r} id={eid}"
