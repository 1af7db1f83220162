/* brewery-server's dataset: breweries loaded from an Open Brewery DB CSV (with
 * libcsv) or synthesised from the built-in per-state table.  A loaded dataset
 * is immutable: rows sorted by id, each with its JSON object pre-rendered the
 * way the real API prints it, and interned state and type names so that a
 * query matches each distinct state once rather than every row. */
#ifndef BREWERY_SERVER_DATA_H
#define BREWERY_SERVER_DATA_H

#include <stdbool.h>
#include <stddef.h>

/* The columns of the Open Brewery DB CSV, in the file's order. */
enum bsrv_field {
    BSRV_ID, BSRV_NAME, BSRV_TYPE, BSRV_ADDRESS_1, BSRV_ADDRESS_2, BSRV_ADDRESS_3,
    BSRV_CITY, BSRV_STATE, BSRV_POSTAL, BSRV_COUNTRY, BSRV_PHONE, BSRV_WEBSITE,
    BSRV_LONGITUDE, BSRV_LATITUDE, BSRV_NFIELDS
};

extern const char *const bsrv_field_names[BSRV_NFIELDS];

typedef struct bsrv_brewery {
    char *f[BSRV_NFIELDS];  /* NULL where the CSV field is empty */
    int state;              /* index into the dataset's states, -1 if none */
    int type;               /* index into the dataset's types, -1 if none */
    double lat, lon;        /* parsed coordinates, when has_coord */
    bool has_coord;         /* both columns are numbers within range */
    char *json;             /* the brewery as a compact JSON object */
    size_t json_len;
    size_t line;            /* the CSV line its row starts on; 0 for built-in rows */
} bsrv_brewery_t;

typedef struct bsrv_dataset {
    bsrv_brewery_t *rows;   /* sorted by id (strcmp), ids unique */
    size_t n, cap;
    char **states;          /* distinct state_province values, sorted */
    size_t nstates;
    char **types;           /* distinct brewery_type values, sorted */
    size_t ntypes;
    size_t ncoord;          /* rows with coordinates */
} bsrv_dataset_t;

/* Loads the CSV at `path` into `ds` (zeroed by the call).  The header row
 * names the columns (any order; id, name and state_province are required,
 * other unknown columns are ignored; a known column named twice is an error).
 * A row with a different number of fields than the header, a duplicate id
 * (the message names both lines), a NUL byte in a field, a malformed quote or
 * an I/O error (a directory: "Is a directory") fails the load with -1 and a
 * message naming the file and line in err[errlen]; `ds` is then empty.
 * Returns 0 on success. */
int bsrv_dataset_load_csv(bsrv_dataset_t *ds, const char *path, char *err, size_t errlen);

/* Fills `ds` with breweries synthesised from builtin-states.c: one per
 * count, deterministic ids and names.  Returns 0, or -1 out of memory. */
int bsrv_dataset_builtin(bsrv_dataset_t *ds, char *err, size_t errlen);

/* The brewery with this id, or NULL. */
const bsrv_brewery_t *bsrv_dataset_find(const bsrv_dataset_t *ds, const char *id);

/* Frees everything `ds` holds; `ds` may be zeroed or partly built. */
void bsrv_dataset_free(bsrv_dataset_t *ds);

#endif
