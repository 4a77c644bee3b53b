"""Print the manifests of the students named in argv as a kubectl `List`, using Cell's own
definitions (cell/students.py: namespace, Q8 BandQuota, cell:student RoleBinding), so the cloud and
`cell students add` onboard a student identically. Run by the students role with Cell's virtualenv."""

import json
import sys

from cell.students import band_quota_manifest, namespace_manifest, role_binding_manifest, specs_from_names

items = []
for spec in specs_from_names(sys.argv[1:]):
    items += [namespace_manifest(spec.name), band_quota_manifest(spec), role_binding_manifest(spec.name)]
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2, sort_keys=True))
