/* mq_deaths.c - reading a delivery's x-death header: which queues a dead-lettered or
 * retried message passed through, and why. Pure: no connection state. */
#include <stdio.h>
#include <string.h>

#include <amqp.h>

#include "mq_int.h"

static int key_is(const amqp_table_entry_t *t, const char *k)
{
    size_t n = strlen(k);
    return t->key.len == n && memcmp(t->key.bytes, k, n) == 0;
}

static void copy_text(const amqp_field_value_t *v, char *out, size_t n)
{
    if (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES)
        snprintf(out, n, "%.*s", (int)v->value.bytes.len, (const char *)v->value.bytes.bytes);
}

static long field_long(const amqp_field_value_t *v)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        return v->value.i8;
    case AMQP_FIELD_KIND_U8:
        return v->value.u8;
    case AMQP_FIELD_KIND_I16:
        return v->value.i16;
    case AMQP_FIELD_KIND_U16:
        return v->value.u16;
    case AMQP_FIELD_KIND_I32:
        return v->value.i32;
    case AMQP_FIELD_KIND_U32:
        return (long)v->value.u32;
    case AMQP_FIELD_KIND_I64:
        return (long)v->value.i64;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        return (long)v->value.u64;
    default:
        return 0;
    }
}

static void one_death(const amqp_table_t *t, mq_death *d)
{
    memset(d, 0, sizeof *d);
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *f = &t->entries[i];
        if (key_is(f, "queue"))
            copy_text(&f->value, d->queue, sizeof d->queue);
        else if (key_is(f, "reason"))
            copy_text(&f->value, d->reason, sizeof d->reason);
        else if (key_is(f, "count"))
            d->count = field_long(&f->value);
        else if (key_is(f, "time"))
            d->time = field_long(&f->value);
    }
}

static const amqp_array_t *x_death(const mq_delivery *d)
{
    const amqp_basic_properties_t *p = &d->priv->props;
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *t = &p->headers.entries[i];
        if (key_is(t, "x-death") && t->value.kind == AMQP_FIELD_KIND_ARRAY)
            return &t->value.value.array;
    }
    return NULL;
}

int mq_delivery_deaths(const mq_delivery *d, mq_death *out, int n)
{
    const amqp_array_t *a = x_death(d);
    if (!a)
        return 0;
    int k = 0;
    for (int i = 0; i < a->num_entries; i++) {
        if (a->entries[i].kind != AMQP_FIELD_KIND_TABLE)
            continue;
        if (k < n)
            one_death(&a->entries[i].value.table, &out[k]);
        k++;
    }
    return k;
}

int mq_last_death_queue(const mq_delivery *d, char *out, size_t n)
{
    mq_death first;
    out[0] = '\0';
    if (mq_delivery_deaths(d, &first, 1) < 1)
        return 0;
    snprintf(out, n, "%s", first.queue);
    return 1;
}
