/* sizes.c — "which structure is lighter": the same table of records held six ways, with
 * each one's real footprint (obm_sizeof_deep: every block's usable size, GC heads and
 * the allocator's rounding included, each object counted once).
 *
 * The data: N records (default 100 000) of three fields, as a Python program would hold a
 * CSV file: id (an int, 0..N-1), name (a short str, "user00042"), score (a fixed-point int,
 * cents).  The same leaf objects are shared by every structure, so each row counts the leaves
 * plus its own containers; a second table shows what each container costs per record.
 *
 * Usage: sizes [N]
 */
#include "obmem.h"
#include "obmem/object.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The packed C layout a program would use without objects. */
typedef struct packed_record_s {
  int64_t id;
  char name[16];
  int64_t score;
} packed_record_t;

static void *must(void *p, const char *what) {
  if (p == NULL) {
    fprintf(stderr, "sizes: out of memory building %s\n", what);
    exit(1);
  }
  return p;
}

static void must_ok(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "sizes: error %d building %s\n", rc, what);
    exit(1);
  }
}

typedef struct row_s {
  const char *name;
  size_t bytes;
} row_t;

int main(int argc, char **argv) {
  long n_arg = argc > 1 ? strtol(argv[1], NULL, 10) : 100000;
  if (n_arg <= 0 || n_arg > 100000000) {
    fprintf(stderr, "sizes: N must be 1..100000000, not '%s'\n", argv[1]);
    return 2;
  }
  size_t n = (size_t)n_arg;
  obm_runtime_t *rt = must(obm_runtime_new(), "the runtime");
  obm_gc_disable(rt); /* a bulk load, as gc.disable() around one: no cycles are made */

  /* the leaves, shared by every structure */
  obm_object_t **ids = must(obm_malloc(n * sizeof *ids), "ids");
  obm_object_t **names = must(obm_malloc(n * sizeof *names), "names");
  obm_object_t **scores = must(obm_malloc(n * sizeof *scores), "scores");
  for (size_t i = 0; i < n; i++) {
    char text[24];
    snprintf(text, sizeof text, "user%05zu", i);
    ids[i] = must(obm_int_new(rt, (int64_t)i), "an id");
    names[i] = must(obm_str_from_cstr(rt, text), "a name");
    scores[i] = must(obm_int_new(rt, (int64_t)((i * 7919) % 1000000) + 1000), "a score");
  }
  obm_object_t *k_id = must(obm_str_intern_cstr(rt, "id"), "a key");
  obm_object_t *k_name = must(obm_str_intern_cstr(rt, "name"), "a key");
  obm_object_t *k_score = must(obm_str_intern_cstr(rt, "score"), "a key");

  /* 1. list of tuples;  2. tuple of tuples */
  obm_object_t *list_of_tuples = must(obm_list_new(rt, 0), "list of tuples");
  obm_object_t **tuples = must(obm_malloc(n * sizeof *tuples), "tuples");
  for (size_t i = 0; i < n; i++) {
    tuples[i] = must(obm_tuple_pack(rt, 3, ids[i], names[i], scores[i]), "a tuple");
    must_ok(obm_list_append(rt, list_of_tuples, tuples[i]), "list of tuples");
  }
  obm_object_t *tuple_of_tuples = must(obm_tuple_from_array(rt, tuples, n), "tuple of tuples");
  for (size_t i = 0; i < n; i++)
    obm_decref(rt, tuples[i]);
  obm_free(tuples);

  /* 3. list of dicts (the keys are the same interned strs in every dict) */
  obm_object_t *list_of_dicts = must(obm_list_new(rt, 0), "list of dicts");
  for (size_t i = 0; i < n; i++) {
    obm_object_t *d = must(obm_dict_new(rt), "a dict");
    must_ok(obm_dict_set(rt, d, k_id, ids[i]), "a dict");
    must_ok(obm_dict_set(rt, d, k_name, names[i]), "a dict");
    must_ok(obm_dict_set(rt, d, k_score, scores[i]), "a dict");
    must_ok(obm_list_append(rt, list_of_dicts, d), "list of dicts");
    obm_decref(rt, d);
  }

  /* 4. dict of lists (columns) */
  obm_object_t *dict_of_lists = must(obm_dict_new(rt), "dict of lists");
  obm_object_t *columns[3] = {obm_list_new(rt, 0), obm_list_new(rt, 0), obm_list_new(rt, 0)};
  obm_object_t **fields[3] = {ids, names, scores};
  obm_object_t *keys[3] = {k_id, k_name, k_score};
  for (int c = 0; c < 3; c++) {
    must(columns[c], "a column");
    for (size_t i = 0; i < n; i++)
      must_ok(obm_list_append(rt, columns[c], fields[c][i]), "a column");
    must_ok(obm_dict_set(rt, dict_of_lists, keys[c], columns[c]), "dict of lists");
    obm_decref(rt, columns[c]);
  }

  /* 5. dict id -> (name, score) */
  obm_object_t *dict_by_id = must(obm_dict_new(rt), "dict by id");
  for (size_t i = 0; i < n; i++) {
    obm_object_t *t = must(obm_tuple_pack(rt, 2, names[i], scores[i]), "a pair");
    must_ok(obm_dict_set(rt, dict_by_id, ids[i], t), "dict by id");
    obm_decref(rt, t);
  }

  /* 6. list of records (a class with __slots__) */
  obm_object_t *list_of_records = must(obm_list_new(rt, 0), "list of records");
  for (size_t i = 0; i < n; i++) {
    obm_object_t *r = must(obm_record_new(rt, &obm_record_type, 3), "a record");
    must_ok(obm_record_set(rt, r, 0, ids[i]), "a record");
    must_ok(obm_record_set(rt, r, 1, names[i]), "a record");
    must_ok(obm_record_set(rt, r, 2, scores[i]), "a record");
    must_ok(obm_list_append(rt, list_of_records, r), "list of records");
    obm_decref(rt, r);
  }

  /* 7. packed C array */
  packed_record_t *packed = must(obm_malloc(n * sizeof *packed), "the packed array");
  for (size_t i = 0; i < n; i++) {
    packed[i].id = (int64_t)i;
    snprintf(packed[i].name, sizeof packed[i].name, "%s", obm_str_data(names[i]));
    packed[i].score = obm_int_value(scores[i]);
  }

  /* the leaves alone: what every object structure pays before its containers */
  size_t leaves = 0;
  for (size_t i = 0; i < n; i++)
    leaves += obm_sizeof(ids[i]) + obm_sizeof(names[i]) + obm_sizeof(scores[i]);

  row_t rows[] = {
      {"list of tuples", obm_sizeof_deep(rt, list_of_tuples)},
      {"tuple of tuples", obm_sizeof_deep(rt, tuple_of_tuples)},
      {"list of dicts", obm_sizeof_deep(rt, list_of_dicts)},
      {"dict of lists (columns)", obm_sizeof_deep(rt, dict_of_lists)},
      {"dict id -> (name, score)", obm_sizeof_deep(rt, dict_by_id)},
      {"list of records (slots)", obm_sizeof_deep(rt, list_of_records)},
      {"packed C array", obm_usable_size(packed)},
  };
  size_t nrows = sizeof rows / sizeof rows[0];
  size_t packed_bytes = rows[nrows - 1].bytes;

  printf("%zu records (id: int, name: str of 9 bytes, score: int), "
         "footprint = obm_sizeof_deep\n\n",
         n);
  printf("| structure | bytes | bytes/record | containers/record | x packed |\n");
  printf("| --- | ---: | ---: | ---: | ---: |\n");
  for (size_t r = 0; r < nrows; r++) {
    bool is_packed = r == nrows - 1;
    double per = (double)rows[r].bytes / (double)n;
    double containers = is_packed ? per : (double)(rows[r].bytes - leaves) / (double)n;
    printf("| %s | %zu | %.1f | %.1f | %.1f |\n", rows[r].name, rows[r].bytes, per, containers,
           (double)rows[r].bytes / (double)packed_bytes);
  }
  printf("\nleaves (ids, names, scores) alone: %zu bytes, %.1f per record; ids 0..256 are the "
         "static small ints (counted at their struct size)\n",
         leaves, (double)leaves / (double)n);

  /* one record's pieces, block by block */
  obm_object_t *t0 = obm_list_get(list_of_tuples, n - 1);
  obm_object_t *d0 = obm_list_get(list_of_dicts, n - 1);
  obm_object_t *r0 = obm_list_get(list_of_records, n - 1);
  printf("\none object each (obm_sizeof): int %zu, str(9) %zu, 3-tuple %zu, 3-key dict %zu, "
         "3-slot record %zu, packed record %zu\n",
         obm_sizeof(ids[n - 1]), obm_sizeof(names[n - 1]), obm_sizeof(t0), obm_sizeof(d0),
         obm_sizeof(r0), sizeof(packed_record_t));

  /* everything goes, and the runtime must be empty */
  obm_object_t *roots[] = {list_of_tuples, tuple_of_tuples, list_of_dicts,
                           dict_of_lists,  dict_by_id,      list_of_records,
                           k_id,           k_name,          k_score};
  for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++)
    obm_decref(rt, roots[i]);
  for (size_t i = 0; i < n; i++) {
    obm_decref(rt, ids[i]);
    obm_decref(rt, names[i]);
    obm_decref(rt, scores[i]);
  }
  obm_free(ids);
  obm_free(names);
  obm_free(scores);
  obm_free(packed);
  size_t live = obm_runtime_free(rt);
  if (live != 0) {
    fprintf(stderr, "sizes: %zu objects leaked\n", live);
    return 1;
  }
  return 0;
}
