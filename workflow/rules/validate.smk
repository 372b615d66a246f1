"""The config against workflow/schemas/config.schema.yaml, before anything else reads it: a
short message naming the key, its value and what is expected (snakemake's own prints the whole
schema and config), a key given twice in one file, a whole number written as a float. Fills
every default into `config`. The checks the schema cannot express are in common.smk."""

import difflib
import re
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


# Settings that became study axes (top-level keys): where a config that sets them should.
MOVED_KEYS = {
    "settings.pretrain.preset": "`pretraining` (e.g. pretraining: {paper: all})",
    "settings.finetune.loss": "`finetune_losses` (e.g. finetune_losses: [ce])",
}


def key_path(path):
    """settings.finetune.epochs, seeds[0]: a jsonschema error's path as the config writes it."""
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "".join(parts).lstrip(".") or "(top level)"


def config_error_message(error):
    """Two lines from a jsonschema ValidationError: key path, bad value, what was expected.

    (snakemake's own message prints the whole schema and config after the useful line.)
    """
    key = key_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    where = "  (config/README.md explains every key)"
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = next((str(name) for name in value if name not in allowed), "?")
        close = difflib.get_close_matches(unknown, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        full = f"{key}.{unknown}" if error.absolute_path else unknown
        if full in MOVED_KEYS:
            hint = f"; it is a study axis now: set {MOVED_KEYS[full]}"
        # a data set's keys depend on its source (one if/then branch of the schema each)
        source = f" with source: {value['source']}" if key.startswith("datasets.") and "source" in value else ""
        return (f"config: unknown key {full}{hint}\n"
                f"  allowed under {key}{source}: {', '.join(allowed)}{where}")
    if error.validator == "required":
        return f"config: {key}: {error.message}\n{where}"
    description = " ".join(str(schema.get("description", "")).split())
    description = description if len(description) <= 160 else description[:157] + "..."
    if "propertyNames" in error.schema_path:  # a bad name of a named entry (datasets.<name>, a preset)
        why = description or (f"expected one of {', '.join(map(str, error.validator_value))}"
                               if error.validator == "enum" else error.message)  # an enum has no description
        return f"config: {key}: the name {value!r} is not allowed: {why}\n{where}"
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    if error.validator == "enum":
        expected = "expected one of " + ", ".join(map(str, error.validator_value))
    elif error.validator == "type":
        expected = f"expected a value of type {error.validator_value}"
        if isinstance(value, float) and value.is_integer():
            expected += " (write it without a decimal point)"
        if len(error.absolute_path) > 1 and isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d*)?", value.strip()):
            # a number written as a string inside a list or mapping: what snakemake's --config makes of one
            expected += " (from --config? it reads list and mapping items as strings: use a --configfile)"
    elif error.validator == "not":
        expected = "this value is not allowed here"
    elif error.validator == "oneOf":  # jsonschema: "... is not valid under any of the given schemas"
        item = next((e for e in error.context if e.relative_path), None)  # an item that fits no form
        if item is not None:
            key = key_path(item.absolute_path)  # a sub-error's path runs from the config's top
            shown = repr(item.instance)
        expected = description or "not one of the forms config/README.md gives"
        description = ""
    else:
        expected = error.message if len(error.message) <= 120 else error.message[:117] + "..."
    about = f"\n  {key}: {description}" if description else "\n"
    return f"config: {key} = {shown}: {expected}{about}{where}"


def strict_integer_error(schema_path):
    """The first value the schema types `integer` that is a float (2.0): JSON Schema counts a
    whole-number float as an integer, but seeds: [0.0] would make paths seed0.0/ and
    users: 300.0 a command-line argument that argparse refuses, long after this check."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    base = jsonschema.validators.validator_for(schema)
    integers = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    strict = jsonschema.validators.extend(base, type_checker=integers)(schema)
    return jsonschema.exceptions.best_match(strict.iter_errors(config))


CONFIG_SCHEMA = CODE_ROOT / "workflow" / "schemas" / "config.schema.yaml"  # CODE_ROOT: the Snakefile


def repeated_yaml_key(path):
    """'file:line: key ...' for the first key given twice in one mapping of a config file, or None:
    YAML keeps the last silently (`seeds: [0]` then `seeds: [1]` planned one seed)."""
    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: its keys may be given again here, which is what it is for
            key = loader.construct_object(key_node)
            if key in seen:
                raise KeyError(f"{path}:{key_node.start_mark.line + 1}: key {key!r} given twice in one mapping; "
                               "expected each key once")
            seen.add(key)
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        yaml.load(Path(path).read_text(encoding="utf-8"), Loader=Strict)
    except KeyError as error:
        return error.args[0]
    except (OSError, yaml.YAMLError):
        return None  # snakemake has read it already: what it could not read it said itself
    return None


for _path in workflow.configfiles:
    _repeated = repeated_yaml_key(_path)
    if _repeated:
        raise WorkflowError(f"config: {_repeated}")

# Fails before any job with a short message naming the key; fills every default into `config`.
try:
    validate(config, schema=str(CONFIG_SCHEMA))
except WorkflowError as error:
    # snakemake raises it inside `except ValidationError`: that error is the context
    cause = error.__cause__ or error.__context__
    if not isinstance(cause, jsonschema.ValidationError):
        raise
    raise WorkflowError(config_error_message(cause)) from None
_whole_float = strict_integer_error(CONFIG_SCHEMA)
if _whole_float is not None:
    raise WorkflowError(config_error_message(_whole_float))
