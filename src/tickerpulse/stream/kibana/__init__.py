"""Kibana saved objects and the Elasticsearch index template shipped for users who run Kibana."""
