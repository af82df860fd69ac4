/*
 * schema.h — event body validation against the JSON Schema files in schemas/.
 *
 * One file per event type, named TYPE.json (schemas/absence.json → type
 * "absence"), loaded once at start with jansson. The broker understands a
 * documented subset of JSON Schema 2020-12 (docs/schemas.md): type, properties,
 * required, additionalProperties, enum, const, minimum, maximum, minLength,
 * maxLength (Unicode code points, as the standard says), format "date"
 * (YYYY-MM-DD, a real calendar date), items, minItems, maxItems, uniqueItems,
 * $ref to "#/$defs/NAME", $defs, default, and the annotations $schema, $id,
 * title, description, examples, $comment. A schema that uses any other keyword
 * is refused at load, so the broker never silently ignores a rule a standard
 * validator would apply.
 *
 * Instances are jansson values (the broker converts msgpack bodies to JSON
 * values first). Validation stops at the first error and reports it as a JSON
 * Pointer into the instance ("/child/birth_date") with a sentence a person can
 * act on.
 */
#ifndef CAREHUB_SCHEMA_H
#define CAREHUB_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

typedef struct schema_set schema_set_t;
typedef struct schema schema_t;

typedef struct {
    char path[512];     /* JSON Pointer of the offending value, relative to the instance; "" = the root */
    char message[512];  /* e.g. "must be one of: male, female, unknown" */
} schema_error_t;

/*
 * Load every *.json file in `dir`. Returns NULL on any error with a message
 * naming the file (and, where jansson gives it, the line) in err. Refuses
 * unknown keywords, bad $ref targets and malformed keyword values.
 */
schema_set_t *schema_set_load(const char *dir, char *err, size_t errlen);

/* Free the set and null the pointer; safe on NULL and twice. */
void schema_set_destroy(schema_set_t **set);

/* The schema for an event type, or NULL when there is none. Lives as long as the set. */
const schema_t *schema_set_get(const schema_set_t *set, const char *type);

/* Number of loaded types and the i-th type name (sorted), for logs and docs. */
size_t schema_set_count(const schema_set_t *set);
const char *schema_set_name(const schema_set_t *set, size_t i);

/*
 * Validate `instance` against `schema`. Returns 0 when valid, -1 with `err`
 * filled otherwise. When `apply_defaults` is non-zero and the instance is
 * valid, absent properties that have a `default` are added to the instance
 * (in place; objects only), so stored bodies carry the defaults.
 */
int schema_validate(const schema_t *schema, json_t *instance, int apply_defaults,
                    schema_error_t *err);

#endif
