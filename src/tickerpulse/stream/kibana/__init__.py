"""Kibana saved objects and the Elasticsearch index template, shipped for users who run Kibana.

- `index-template.json`: the documents index template (`ElasticsearchStore` installs it, with the index
  name it is configured with); `PUT _index_template/tickerpulse-sentiment` with this body by hand works too.
- `saved-objects.ndjson`: two data views (`tickerpulse-sentiment`, `tickerpulse-sentiment-dead-letters`),
  five visualizations, two saved searches and the dashboard "tickerpulse: live financial sentiment".
  Import in Kibana 8.x: Stack Management -> Saved objects -> Import, or
  `curl -X POST 'http://localhost:5601/api/saved_objects/_import?overwrite=true' -H 'kbn-xsrf: true'
   --form file=@saved-objects.ndjson`. They assume the default index name `tickerpulse-sentiment`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def template_path() -> Path:
    """The shipped index template JSON."""
    return Path(str(files(__name__).joinpath("index-template.json")))


def saved_objects_path() -> Path:
    """The shipped Kibana saved objects (NDJSON)."""
    return Path(str(files(__name__).joinpath("saved-objects.ndjson")))
