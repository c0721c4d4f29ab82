"""Our .proto files against the wire contract bundled in the e2b SDK: every message the SDK
knows must exist here with the same field names, numbers, types and labels."""

import pytest
from e2b.envd.filesystem import filesystem_pb as sdk_fs
from e2b.envd.process import process_pb as sdk_process

from corral_services.envd.gen.filesystem import filesystem_pb as our_fs
from corral_services.envd.gen.process import process_pb as our_process


def _shape(file_desc):
    messages = {}

    def visit(message):
        messages[message.type_name] = {
            field.number: (field.name, str(field.proto.type), field.proto.type_name, str(field.presence))
            for field in message.fields
        }
        for nested in message.nested_messages:
            visit(nested)

    for message in file_desc.messages:
        visit(message)
    services = {
        s.type_name: {m.name: (m.input.type_name, m.output.type_name, str(m.method_kind)) for m in s.methods}
        for s in file_desc.services
    }
    enums = {e.type_name: {v.name: v.number for v in e.values} for e in file_desc.enums}
    return messages, services, enums


@pytest.mark.parametrize(("ours", "sdk"), [(our_process, sdk_process), (our_fs, sdk_fs)])
def test_wire_contract_matches_sdk(ours, sdk):
    our_messages, our_services, our_enums = _shape(ours.desc())
    sdk_messages, sdk_services, sdk_enums = _shape(sdk.desc())
    for name, fields in sdk_messages.items():
        assert our_messages.get(name) == fields, name
    assert our_services == sdk_services
    assert our_enums == sdk_enums
