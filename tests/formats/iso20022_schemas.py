"""The official ISO 20022 XSDs for the format tests, read from the wheels that ship them (dev
dependencies; nothing is fetched), and where the sample files are. A plain module rather than a
conftest so that its name cannot collide with tests/conftest.py."""

from __future__ import annotations

from functools import cache
from importlib.metadata import files
from pathlib import Path

from lxml import etree

SAMPLES = Path(__file__).parent / "samples" / "iso20022"

# Where each schema lives inside its wheel; pinned versions in pyproject.toml keep these stable.
_SCHEMAS = {
    "pain.001.001.03": ("sepaxml", "sepaxml/schemas/pain.001.001.03.xsd"),
    "pain.001.001.09": ("sepaxml", "sepaxml/schemas/pain.001.001.09.xsd"),
    "camt.053.001.02": ("camt053", "camt053/xsd/camt.053.001.02.xsd"),
    "camt.053.001.08": ("camt053", "camt053/xsd/camt.053.001.08.xsd"),
    "camt.054.001.08": ("camt053", "camt053/xsd/camt.054.001.08.xsd"),
    "pain.002.001.03": ("pain001", "pain001/pain002/schemas/pain.002.001.03.xsd"),
}


@cache
def load_schema(name: str) -> etree.XMLSchema:
    distribution, path = _SCHEMAS[name]
    for file in files(distribution) or ():
        if str(file) == path:
            # The schemas have no imports or includes; nothing is resolved over the network.
            parser = etree.XMLParser(no_network=True, resolve_entities=False)
            return etree.XMLSchema(etree.parse(str(file.locate()), parser))
    raise LookupError(f"{path} is not in the installed {distribution} wheel")


def assert_valid(name: str, document: bytes) -> etree._Element:
    schema = load_schema(name)
    root = etree.fromstring(document, etree.XMLParser(huge_tree=True))
    if not schema.validate(root):
        errors = "\n".join(str(e) for e in list(schema.error_log)[:5])
        raise AssertionError(f"not a valid {name}:\n{errors}")
    return root
