/*
 * journal.h — the replay journal's format: every output an event wrote, kept beside the state
 * that event produced, so that a redelivery of the event gets exactly its first outputs back
 * (docs/ENGINE.md §4).
 *
 * Owns nothing but the byte format; the engine writes chunks into its own buffers, the store
 * writes them to Redis in the same transaction as the entity values and reads them back.
 * One chunk holds the events of one input partition in one batch, in offset order; only
 * events that wrote outputs have an entry. All integers little-endian:
 *
 *     chunk:  "RFJ1"  u32 n_entries  entry × n_entries
 *     entry:  i64 offset  u16 n_outputs  output × n_outputs
 *     output: u8 job  u8 kind  u16 topic_len  topic  u16 key_len  key  u32 len  payload
 *
 * job is the job's index in the jobs table (src/jobs.c), kind its own output number; the
 * topic is named, not numbered, so a replay after a restart with another config still goes
 * where the first output went. The reader is bounds-checked: a chunk from Redis is input.
 */
#ifndef RISKFLOW_JOURNAL_H
#define RISKFLOW_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#define RF_JOURNAL_MAGIC "RFJ1"
#define RF_JOURNAL_HEADER 8
#define RF_JOURNAL_TOPIC_MAX 255 /* Kafka's own limit is 249 */
#define RF_JOURNAL_KEY_MAX 65535

/* A growable byte buffer (owned by whoever embeds it; rf_jbuf_free releases it). */
struct rf_jbuf {
    uint8_t *b;
    size_t n, cap;
};

/* Make room for `more` bytes; out of memory aborts (the hot path has no better answer, and
 * the buffers stop growing once warm). Returns the write position. */
uint8_t *rf_jbuf_room(struct rf_jbuf *j, size_t more);
void rf_jbuf_free(struct rf_jbuf *j);

/* Writer: begin a chunk at j->n, returning where it starts; entries and outputs append;
 * rf_journal_chunk_end patches the entry count. An entry's outputs follow it directly. */
size_t rf_journal_chunk_begin(struct rf_jbuf *j);
/* Returns the entry's position (for rf_journal_entry_end). */
size_t rf_journal_entry_begin(struct rf_jbuf *j, int64_t offset);
/* Appends one output; *key_at and *payload_at receive where its key and payload now lie in
 * j (positions, since the buffer may move). Topic longer than RF_JOURNAL_TOPIC_MAX or key
 * longer than RF_JOURNAL_KEY_MAX: RF_E_INVAL and nothing written. */
int rf_journal_output(struct rf_jbuf *j, int job, int kind, const char *topic, const void *key,
                      size_t key_len, const void *payload, size_t len, size_t *key_at,
                      size_t *payload_at);
void rf_journal_entry_end(struct rf_jbuf *j, size_t entry_at, int n_outputs);
void rf_journal_chunk_end(struct rf_jbuf *j, size_t chunk_at, uint32_t n_entries);

/* One output read back (pointers into the chunk). */
struct rf_jout {
    int job, kind;
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *payload;
    size_t len;
};

/* Find the entry of `offset` in a chunk: 1 and *outs, *n_outs set (the outputs' bytes, to
 * rf_journal_next), 0 when the chunk has no entry for it, RF_E_MALFORMED when the chunk is
 * not a well-formed journal chunk (checked whole, before anything is returned). */
int rf_journal_find(const uint8_t *chunk, size_t len, int64_t offset, const uint8_t **outs,
                    int *n_outs);
/* First and last offsets of a well-formed chunk's entries: 0, or RF_E_MALFORMED (also for a
 * chunk with no entry). */
int rf_journal_span(const uint8_t *chunk, size_t len, int64_t *first, int64_t *last);
/* The next output of an entry found by rf_journal_find (the chunk was checked: no bounds
 * left to check); advances *p. */
void rf_journal_next(const uint8_t **p, struct rf_jout *o);

#endif
