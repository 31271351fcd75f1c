// data_loader.c — batches: shuffling, sharding, worker threads, prefetch, resume.
//
// Everything a batch holds is a pure function of (seed, epoch, batch number):
//   order   the epoch's permutation of the data set, Philox(seed, stream = epoch),
//           or 0..N-1 without shuffle;
//   shard   torch's DistributedSampler: the order padded by wrapping around to
//           a multiple of world_size, then every world_size-th entry from rank;
//   batch k entries [k B, (k + 1) B) of the shard, each sample transformed with
//           Philox keyed by (seed, epoch, sample index, transform position).
// Workers only decide *when* a batch is assembled, never *what* it holds, so
// batch k is the same with 0, 1 or 8 workers, and starting an epoch at batch
// k gives exactly the batches an uninterrupted run would.
//
// Threads: `workers` threads claim batch numbers in order and fill one of
// `prefetch + 1` slots (batch k goes to slot k mod slots; one slot is the
// batch the caller holds). A worker may start batch k only once the caller
// has given back batch k - slots, so at most `prefetch` batches wait ahead.
// The caller takes batches strictly in order. Threads live for one epoch:
// rt_loader_next joins them at the end, rt_loader_stop at an early stop.
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

enum { MAX_WORKERS = 64, MAX_PREFETCH = 1024 };

typedef struct {
    RtBatch batch;
    int64_t filled;   // the batch number it holds, -1: none
} Slot;

typedef struct {
    struct RtLoader *ld;
    float *scratch;
    pthread_t thread;
} Worker;

struct RtLoader {
    RtDataset *ds;            // our own handle (a clone)
    RtLoaderOptions opt;
    RtTransforms *tf;         // our own copy; NULL: samples copied as they are
    RtDataDtype in_dtype, out_dtype;
    int in_ndim;
    int64_t in_shape[RT_DATA_MAX_DIMS], out_shape[RT_DATA_MAX_DIMS];
    int64_t in_bytes, out_numel, scratch_floats;
    int64_t n, per_rank, nbatches, last_size;
    int64_t *perm, *order;    // n; per_rank
    int nslots;
    Slot *slots;
    Worker *workers;          // opt.workers, or 1 for the caller's own use with 0 workers
    // The current epoch, guarded by mu.
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready;
    bool running, threads_up, stop, holding;
    int64_t epoch, end, next_claim, next_take, released;
};

int64_t rt_loader_num_batches(const RtLoader *ld) { return ld->nbatches; }
int64_t rt_loader_last_batch_size(const RtLoader *ld) { return ld->last_size; }
int64_t rt_loader_num_samples(const RtLoader *ld) { return ld->per_rank; }
RtDataDtype rt_loader_dtype(const RtLoader *ld) { return ld->out_dtype; }

int rt_loader_sample_shape(const RtLoader *ld, int64_t shape[RT_DATA_MAX_DIMS]) {
    memcpy(shape, ld->out_shape, (size_t)ld->in_ndim * sizeof *shape);
    return ld->in_ndim;
}

RtLoader *rt_loader_create(const RtDataset *ds, const RtTransforms *tf, const RtLoaderOptions *opt, char **err) {
    const char *name = rt_data_name(ds);
    RtLoaderOptions o = *opt;
    if (o.batch_size < 1) return rt_data_error(err, "%s: loader batch size %lld is not positive", name, (long long)o.batch_size);
    if (o.world_size < 1) o.world_size = 1;
    if (o.rank < 0 || o.rank >= o.world_size)
        return rt_data_error(err, "%s: loader rank %d is not in [0, %d)", name, o.rank, o.world_size);
    if (o.workers < 0 || o.workers > MAX_WORKERS)
        return rt_data_error(err, "%s: loader workers %d is not in [0, %d]", name, o.workers, MAX_WORKERS);
    if (o.prefetch < 0 || o.prefetch > MAX_PREFETCH)
        return rt_data_error(err, "%s: loader prefetch %d is not in [0, %d]", name, o.prefetch, MAX_PREFETCH);
    if (o.prefetch == 0) o.prefetch = 2 * (o.workers > 0 ? o.workers : 1);
    if (o.limit < 0) o.limit = 0;

    RtLoader *ld = calloc(1, sizeof *ld);
    if (!ld) return rt_data_error(err, "%s: out of memory", name);
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv_work, NULL);
    pthread_cond_init(&ld->cv_ready, NULL);
    ld->opt = o;
    ld->in_dtype = rt_data_dtype(ds);
    ld->in_ndim = rt_data_sample_shape(ds, ld->in_shape);
    ld->in_bytes = rt_data_sample_numel(ds) * (int64_t)rt_data_dtype_size(ld->in_dtype);
    if (tf) {
        char *terr = NULL;
        if (rt_tf_output_shape(tf, ld->in_ndim, ld->in_shape, ld->out_shape, &terr) < 0) {
            rt_data_error(err, "%s: %s", name, terr ? terr : "transform does not apply");
            free(terr);
            rt_loader_free(ld);
            return NULL;
        }
        ld->tf = rt_tf_clone(tf);
        ld->out_dtype = RT_DATA_F32;
        ld->scratch_floats = rt_tf_scratch_floats(tf, ld->in_ndim, ld->in_shape);
    } else {
        memcpy(ld->out_shape, ld->in_shape, sizeof ld->in_shape);
        ld->out_dtype = ld->in_dtype;
    }
    ld->out_numel = 1;
    for (int i = 0; i < ld->in_ndim; i++) ld->out_numel *= ld->out_shape[i];

    // Sizes: DistributedSampler's num_samples = ceil(N / world), then batches.
    int64_t B = o.batch_size, W = o.world_size;
    ld->n = rt_data_len(ds);
    ld->per_rank = (ld->n + W - 1) / W;
    ld->nbatches = o.drop_last ? ld->per_rank / B : (ld->per_rank + B - 1) / B;
    ld->last_size = o.drop_last || ld->per_rank % B == 0 ? (ld->nbatches ? B : 0) : ld->per_rank % B;
    if (o.limit && o.limit < ld->nbatches) {
        ld->nbatches = o.limit;
        ld->last_size = B;
    }

    ld->ds = rt_data_clone(ds, err);
    ld->nslots = o.workers > 0 ? o.prefetch + 1 : 1;
    int nscratch = o.workers > 0 ? o.workers : 1;
    ld->perm = malloc((size_t)(ld->n + 1) * sizeof *ld->perm);
    ld->order = malloc((size_t)(ld->per_rank + 1) * sizeof *ld->order);
    ld->slots = calloc((size_t)ld->nslots, sizeof *ld->slots);
    ld->workers = calloc((size_t)nscratch, sizeof *ld->workers);
    bool ok = ld->ds && (ld->tf || !tf) && ld->perm && ld->order && ld->slots && ld->workers;
    size_t xbytes = (size_t)(B * ld->out_numel) * rt_data_dtype_size(ld->out_dtype);
    for (int s = 0; ok && s < ld->nslots; s++) {
        RtBatch *b = &ld->slots[s].batch;
        ld->slots[s].filled = -1;
        b->dtype = ld->out_dtype;
        b->ndim = ld->in_ndim + 1;
        b->shape[0] = B;
        memcpy(b->shape + 1, ld->out_shape, (size_t)ld->in_ndim * sizeof *ld->out_shape);
        b->x = malloc(xbytes);
        b->y = rt_data_has_labels(ds) ? malloc((size_t)B * sizeof *b->y) : NULL;
        b->indices = malloc((size_t)B * sizeof *b->indices);
        ok = b->x && b->indices && (b->y || !rt_data_has_labels(ds));
    }
    for (int w = 0; ok && w < nscratch; w++) {
        ld->workers[w].ld = ld;
        if (tf) ok = (ld->workers[w].scratch = malloc((size_t)ld->scratch_floats * sizeof(float))) != NULL;
    }
    if (!ok) {
        if (ld->ds) rt_data_error(err, "%s: loader: out of memory", name);
        rt_loader_free(ld);
        return NULL;
    }
    return ld;
}

// Fills slot with batch k of the current epoch.
static void fill(RtLoader *ld, Slot *slot, int64_t k, float *scratch) {
    RtBatch *b = &slot->batch;
    int64_t B = ld->opt.batch_size, first = k * B;
    int64_t size = first + B <= ld->per_rank ? B : ld->per_rank - first;
    b->size = size;
    b->shape[0] = size;
    b->index = k;
    b->epoch = ld->epoch;
    for (int64_t i = 0; i < size; i++) {
        int64_t idx = ld->order[first + i];
        if (i + 2 < size) {   // shuffled samples are far apart in memory: fetch ahead
            const char *next = rt_data_sample(ld->ds, ld->order[first + i + 2]);
            for (int64_t off = 0; off < ld->in_bytes; off += 64) __builtin_prefetch(next + off);
        }
        b->indices[i] = idx;
        if (b->y) b->y[i] = rt_data_label(ld->ds, idx);
        const void *src = rt_data_sample(ld->ds, idx);
        if (ld->tf)
            rt_tf_apply(ld->tf, ld->in_dtype, ld->in_ndim, ld->in_shape, src, (float *)b->x + i * ld->out_numel,
                        scratch, ld->opt.seed, ld->epoch, idx);
        else
            memcpy((char *)b->x + i * ld->in_bytes, src, (size_t)ld->in_bytes);
    }
}

static void *worker_main(void *arg) {
    Worker *w = arg;
    RtLoader *ld = w->ld;
    pthread_mutex_lock(&ld->mu);
    while (!ld->stop && ld->next_claim < ld->end) {
        int64_t k = ld->next_claim;
        if (k >= ld->released + ld->nslots) {   // its slot still holds batch k - nslots
            pthread_cond_wait(&ld->cv_work, &ld->mu);
            continue;
        }
        ld->next_claim++;
        pthread_mutex_unlock(&ld->mu);
        Slot *slot = &ld->slots[k % ld->nslots];
        fill(ld, slot, k, w->scratch);
        pthread_mutex_lock(&ld->mu);
        slot->filled = k;
        pthread_cond_broadcast(&ld->cv_ready);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

// Joins the workers of the current epoch (they leave once stop is set or
// every batch is claimed).
static void join_workers(RtLoader *ld) {
    if (!ld->threads_up) return;
    pthread_mutex_lock(&ld->mu);
    ld->stop = true;
    pthread_cond_broadcast(&ld->cv_work);
    pthread_mutex_unlock(&ld->mu);
    for (int w = 0; w < ld->opt.workers; w++) pthread_join(ld->workers[w].thread, NULL);
    ld->threads_up = false;
}

void rt_loader_stop(RtLoader *ld) {
    if (!ld) return;
    join_workers(ld);
    ld->running = false;
    ld->holding = false;
}

// The shard of `rank` of the epoch's order (DistributedSampler): position p
// of the shard is entry rank + p * world of the order repeated end to end.
static void make_order(RtLoader *ld, int64_t epoch) {
    const RtLoaderOptions *o = &ld->opt;
    if (o->shuffle) rt_data_permutation(ld->n, o->seed, (uint64_t)epoch, ld->perm);
    else
        for (int64_t i = 0; i < ld->n; i++) ld->perm[i] = i;
    for (int64_t p = 0; p < ld->per_rank; p++) ld->order[p] = ld->perm[(o->rank + p * o->world_size) % ld->n];
}

int rt_loader_start(RtLoader *ld, int64_t epoch, int64_t start_batch, char **err) {
    rt_loader_stop(ld);
    if (epoch < 0 || epoch >= (INT64_C(1) << 48))
        return rt_data_error(err, "%s: loader epoch %lld is out of range", rt_data_name(ld->ds), (long long)epoch), -1;
    if (start_batch < 0)
        return rt_data_error(err, "%s: loader start batch %lld is negative", rt_data_name(ld->ds), (long long)start_batch), -1;
    make_order(ld, epoch);
    ld->epoch = epoch;
    ld->end = ld->nbatches;
    ld->next_claim = ld->next_take = ld->released = start_batch < ld->end ? start_batch : ld->end;
    ld->stop = false;
    ld->holding = false;
    for (int s = 0; s < ld->nslots; s++) ld->slots[s].filled = -1;
    ld->running = true;
    if (ld->opt.workers == 0 || ld->next_claim == ld->end) return 0;
    for (int w = 0; w < ld->opt.workers; w++) {
        if (pthread_create(&ld->workers[w].thread, NULL, worker_main, &ld->workers[w]) != 0) {
            // Stop the ones already running, then report.
            pthread_mutex_lock(&ld->mu);
            ld->stop = true;
            pthread_cond_broadcast(&ld->cv_work);
            pthread_mutex_unlock(&ld->mu);
            for (int j = 0; j < w; j++) pthread_join(ld->workers[j].thread, NULL);
            ld->running = false;
            return rt_data_error(err, "%s: loader: cannot start worker thread %d", rt_data_name(ld->ds), w), -1;
        }
    }
    ld->threads_up = true;
    return 0;
}

const RtBatch *rt_loader_next(RtLoader *ld) {
    if (!ld->running) return NULL;
    if (ld->opt.workers == 0) {
        if (ld->next_take >= ld->end) {
            ld->running = false;
            return NULL;
        }
        fill(ld, &ld->slots[0], ld->next_take, ld->workers[0].scratch);
        ld->next_take++;
        return &ld->slots[0].batch;
    }
    pthread_mutex_lock(&ld->mu);
    if (ld->holding) {   // give back the batch taken last time
        ld->released++;
        ld->holding = false;
        pthread_cond_broadcast(&ld->cv_work);
    }
    int64_t k = ld->next_take;
    if (k >= ld->end) {
        pthread_mutex_unlock(&ld->mu);
        rt_loader_stop(ld);
        return NULL;
    }
    Slot *slot = &ld->slots[k % ld->nslots];
    while (slot->filled != k) pthread_cond_wait(&ld->cv_ready, &ld->mu);
    ld->next_take++;
    ld->holding = true;
    pthread_mutex_unlock(&ld->mu);
    return &slot->batch;
}

void rt_loader_free(RtLoader *ld) {
    if (!ld) return;
    rt_loader_stop(ld);
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv_work);
    pthread_cond_destroy(&ld->cv_ready);
    for (int s = 0; ld->slots && s < ld->nslots; s++) {
        free(ld->slots[s].batch.x);
        free(ld->slots[s].batch.y);
        free(ld->slots[s].batch.indices);
    }
    for (int w = 0; ld->workers && w < (ld->opt.workers > 0 ? ld->opt.workers : 1); w++) free(ld->workers[w].scratch);
    free(ld->slots);
    free(ld->workers);
    free(ld->perm);
    free(ld->order);
    rt_data_free(ld->ds);
    rt_tf_free(ld->tf);
    free(ld);
}
