/*
 * toy2d.c - the classic 2D density-estimation toy sets, as drawn data sets
 * (with train_size > 0 the training split is a fixed, finite draw).
 *
 * moons, 8gaussians, rings, checkerboard, pinwheel, 2spirals. Every split is
 * drawn: row r of a stream is a pure function of (key, r), because each row
 * takes its random numbers from sub-stream r of the key (uniforms at indices
 * 0..3, normals from index 4 on, so the two never share a Philox block).
 * The result therefore never depends on how rows are split across calls or
 * threads. The host uses test_size rows from a fixed key for valid and test.
 *
 * Where a set follows the FFJORD toy generators, the differences are noted
 * next to it.
 */
#include <math.h>
#include <stdlib.h>

#include <flowlab/flowlab.h>

#define TOY_PI 3.14159265358979323846

typedef enum toy_kind {
    TOY_MOONS,
    TOY_8GAUSSIANS,
    TOY_RINGS,
    TOY_CHECKERBOARD,
    TOY_PINWHEEL,
    TOY_2SPIRALS
} toy_kind;

typedef struct toy {
    toy_kind kind;
    double noise;  /* std of the added normal noise (pinwheel: radial std) */
    double scale;  /* 8gaussians, rings */
    int even;      /* moons: stratified angles */
    fl_rng_key train_key; /* fixed training set (train_size > 0) */
    int rings;     /* rings */
} toy;

/* ---- key tables ---------------------------------------------------------- */

#define TEST_SIZE_KEY                                                              \
    { "test_size", FL_KEY_INT, "10000", 1, 10000000, NULL,                         \
      "rows of the fixed valid and test draws" },                                  \
    { "train_size", FL_KEY_INT, "0", 0, 100000000, NULL,                           \
      "0 = a fresh draw for every batch; N = a fixed training set of N rows, "     \
      "reshuffled every epoch (finite-sample experiments)" }

static const fl_key moons_keys[] = {
    { "noise", FL_KEY_REAL, "0.05", 0, 10, NULL, "std of normal noise added to x and y" },
    { "sampling", FL_KEY_ENUM, "even", 0, 0, "even|random",
      "even: rows alternate between the moons and their angles follow a randomly shifted "
      "golden-ratio sequence, so any run of rows covers both arcs evenly, as make_moons' "
      "linspace does; random: moon and angle drawn independently per row" },
    TEST_SIZE_KEY,
};

static const fl_key gaussians_keys[] = {
    { "noise", FL_KEY_REAL, "0.1", 0, 10, NULL, "std of each gaussian" },
    { "scale", FL_KEY_REAL, "2", 0, 100, NULL, "distance of the centers from the origin" },
    TEST_SIZE_KEY,
};

static const fl_key rings_keys[] = {
    { "noise", FL_KEY_REAL, "0.08", 0, 10, NULL, "std of normal noise added to x and y" },
    { "rings", FL_KEY_INT, "4", 1, 32, NULL, "number of concentric rings" },
    { "scale", FL_KEY_REAL, "2", 0, 100, NULL, "radius of the outermost ring" },
    TEST_SIZE_KEY,
};

static const fl_key checkerboard_keys[] = {
    { "noise", FL_KEY_REAL, "0", 0, 10, NULL, "std of normal noise added to x and y" },
    TEST_SIZE_KEY,
};

static const fl_key pinwheel_keys[] = {
    { "noise", FL_KEY_REAL, "0.3", 0, 10, NULL, "radial std of each arm" },
    TEST_SIZE_KEY,
};

static const fl_key spirals_keys[] = {
    { "noise", FL_KEY_REAL, "0.1", 0, 10, NULL, "std of normal noise added to x and y" },
    TEST_SIZE_KEY,
};

#define N_KEYS(t) ((uint32_t)(sizeof(t) / sizeof((t)[0])))

/* ---- instance ------------------------------------------------------------ */

static fl_status toy_create(const fl_host *host, fl_ctx *cx, fl_dataset_info *info,
                            void **self, toy_kind kind)
{
    toy *t = calloc(1, sizeof *t);
    if (!t) {
        host->error(cx, "out of memory for the data set");
        return FL_ERR_NOMEM;
    }
    t->kind = kind;
    t->noise = host->cfg_real(cx, "noise");
    /* Only ask for keys this class declared: anything else is a host bug. */
    if (kind == TOY_8GAUSSIANS || kind == TOY_RINGS)
        t->scale = host->cfg_real(cx, "scale");
    if (kind == TOY_RINGS)
        t->rings = (int)host->cfg_int(cx, "rings");
    if (kind == TOY_MOONS)
        t->even = host->cfg_int(cx, "sampling") == 0;

    uint64_t test_size = (uint64_t)host->cfg_int(cx, "test_size");
    uint64_t train_size = (uint64_t)host->cfg_int(cx, "train_size");
    info->dim = 2;
    info->drawn = (1u << FL_SPLIT_VALID) | (1u << FL_SPLIT_TEST);
    if (train_size == 0) info->drawn |= 1u << FL_SPLIT_TRAIN; /* fresh rows for ever */
    t->train_key = host->rng_key(cx, "train");
    info->n[FL_SPLIT_TRAIN] = train_size;
    info->n[FL_SPLIT_VALID] = test_size;
    info->n[FL_SPLIT_TEST] = test_size;
    info->image_h = 0;
    info->image_w = 0;
    *self = t;
    return FL_OK;
}

static void toy_destroy(void *self)
{
    free(self);
}

/* ---- one row per set: u = 4 uniforms in (0,1), z = 2 standard normals ---- */

/* Index in 0..n-1 from a uniform in (0,1); the clamp guards u*n rounding
 * up to n. */
static int pick(double u, int n)
{
    int k = (int)(u * n);
    return k < n ? k : n - 1;
}

/* scikit-learn make_moons, without its final rescaling (there is none). */
static void row_moons(const toy *t, const double *u, const double *z, double *p)
{
    double a = TOY_PI * u[0];
    if (u[1] < 0.5) {
        p[0] = cos(a);
        p[1] = sin(a);
    } else {
        p[0] = 1.0 - cos(a);
        p[1] = 0.5 - sin(a);
    }
    p[0] += t->noise * z[0];
    p[1] += t->noise * z[1];
}

/* Eight gaussians on a circle of radius `scale` (FFJORD also divides by
 * 1.414; here the scale key says it directly). */
static void row_8gaussians(const toy *t, const double *u, const double *z, double *p)
{
    double a = (TOY_PI / 4.0) * pick(u[0], 8);
    p[0] = t->scale * cos(a) + t->noise * z[0];
    p[1] = t->scale * sin(a) + t->noise * z[1];
}

/* Ring i has radius scale*(i+1)/rings and is picked with probability
 * proportional to its radius, so the density per unit length is uniform. */
static void row_rings(const toy *t, const double *u, const double *z, double *p)
{
    int n = t->rings;
    double total = 0.5 * n * (n + 1.0);  /* sum of the weights 1..n */
    double target = u[0] * total, cum = 0.0;
    int i = 0;
    for (; i < n - 1; i++) {
        cum += i + 1.0;
        if (target < cum)
            break;
    }
    double r = t->scale * (i + 1.0) / n;
    double a = 2.0 * TOY_PI * u[1];
    p[0] = r * cos(a) + t->noise * z[0];
    p[1] = r * sin(a) + t->noise * z[1];
}

/* FFJORD's checkerboard without its final factor 2: uniform on the 8 unit
 * cells of [-2,2)^2 whose floor(x)+floor(y) is even, drawn directly (column
 * cell from x, then one of the two row cells of matching parity). */
static void row_checkerboard(const toy *t, const double *u, const double *z, double *p)
{
    int col = pick(u[0], 4);                  /* floor(x) + 2 */
    int row = (col & 1) + 2 * (u[1] >= 0.5);  /* floor(y) + 2, same parity */
    p[0] = 4.0 * u[0] - 2.0 + t->noise * z[0];
    p[1] = row - 2.0 + u[2] + t->noise * z[1];
}

/* FFJORD's pinwheel: 5 arms, tangential std 0.1, rate 0.25, final factor 2;
 * `noise` is the radial std. The rotation is FFJORD's row-vector product
 * f * [[c, -s], [s, c]]. */
static void row_pinwheel(const toy *t, const double *u, const double *z, double *p)
{
    double f0 = t->noise * z[0] + 1.0;
    double f1 = 0.1 * z[1];
    double a = 2.0 * TOY_PI * pick(u[0], 5) / 5.0 + 0.25 * exp(f0);
    double c = cos(a), s = sin(a);
    p[0] = 2.0 * (f0 * c + f1 * s);
    p[1] = 2.0 * (-f0 * s + f1 * c);
}

/* FFJORD's two spirals, with its U[0,0.5) jitter replaced by the normal
 * noise (FFJORD adds both; the jitter only shifts the arms off-center). */
static void row_2spirals(const toy *t, const double *u, const double *z, double *p)
{
    double n = sqrt(u[0]) * 540.0 * (2.0 * TOY_PI) / 360.0;
    double sign = u[1] < 0.5 ? 1.0 : -1.0;
    p[0] = sign * (-cos(n) * n) / 3.0 + t->noise * z[0];
    p[1] = sign * (sin(n) * n) / 3.0 + t->noise * z[1];
}

/* Row `row` of the stream keyed by `key`. */
static void toy_row(const toy *t, fl_rng_key key, uint64_t row, fl_real *out)
{
    fl_real ur[4], zr[2];
    fl_rng_uniform(key, row, 0, 4, ur);
    fl_rng_normal(key, row, 4, 2, zr);
    double u[4], z[2] = { zr[0], zr[1] }, p[2] = { 0, 0 };
    /* A float uniform can round up to exactly 1; keep every u in (0,1). */
    for (int j = 0; j < 4; j++)
        u[j] = ur[j] < 1 ? ur[j] : nextafter(1.0, 0.0);
    if (t->kind == TOY_MOONS && t->even) {
        /* Still a pure function of (key, row): the shift comes from the
         * key, the position from the row index. */
        fl_real shift;
        fl_rng_uniform(key, UINT64_MAX, 0, 1, &shift);
        double g = (double)shift + (double)(row >> 1) * 0.6180339887498949;
        u[0] = g - floor(g);
        u[1] = (row & 1) ? 0.75 : 0.25;
    }
    switch (t->kind) {
    case TOY_MOONS: row_moons(t, u, z, p); break;
    case TOY_8GAUSSIANS: row_8gaussians(t, u, z, p); break;
    case TOY_RINGS: row_rings(t, u, z, p); break;
    case TOY_CHECKERBOARD: row_checkerboard(t, u, z, p); break;
    case TOY_PINWHEEL: row_pinwheel(t, u, z, p); break;
    case TOY_2SPIRALS: row_2spirals(t, u, z, p); break;
    }
    out[0] = (fl_real)p[0];
    out[1] = (fl_real)p[1];
}

static fl_status toy_draw(void *self, fl_split split, fl_rng_key key, uint64_t first,
                          uint32_t n, fl_real *out)
{
    const toy *t = self;
    (void)split;  /* the host already keys each split differently */
    for (uint32_t i = 0; i < n; i++) toy_row(t, key, first + i, out + 2 * (size_t)i);
    return FL_OK;
}

/* The fixed training set: row r is row r of the set's own training stream. */
static fl_status toy_read(void *self, fl_split split, const uint64_t *rows, uint32_t n,
                          fl_real *out)
{
    const toy *t = self;
    (void)split;  /* only the train split can be finite */
    for (uint32_t i = 0; i < n; i++) toy_row(t, t->train_key, rows[i], out + 2 * (size_t)i);
    return FL_OK;
}

/* ---- classes ------------------------------------------------------------- */

/* One create wrapper per class: the class is the only place the kind lives. */
#define TOY_CREATE(fn, kind)                                                          \
    static fl_status fn(const fl_host *host, fl_ctx *cx, fl_dataset_info *info,       \
                        void **self)                                                  \
    {                                                                                 \
        return toy_create(host, cx, info, self, kind);                                \
    }

TOY_CREATE(create_moons, TOY_MOONS)
TOY_CREATE(create_8gaussians, TOY_8GAUSSIANS)
TOY_CREATE(create_rings, TOY_RINGS)
TOY_CREATE(create_checkerboard, TOY_CHECKERBOARD)
TOY_CREATE(create_pinwheel, TOY_PINWHEEL)
TOY_CREATE(create_2spirals, TOY_2SPIRALS)

#define TOY_CLASS(var, name_, summary_, keys_, create_)                               \
    static const fl_dataset_class var = {                                             \
        .base = { .struct_size = sizeof(fl_dataset_class), .name = name_,             \
                  .summary = summary_, .keys = keys_, .n_keys = N_KEYS(keys_) },      \
        .flags = 0,                                                                   \
        .create = create_,                                                            \
        .destroy = toy_destroy,                                                       \
        .draw = toy_draw,                                                             \
        .read = toy_read,                                                             \
    };

TOY_CLASS(moons_class, "moons", "two interleaving half circles (scikit-learn make_moons)",
          moons_keys, create_moons)
TOY_CLASS(gaussians_class, "8gaussians", "eight gaussians evenly spaced on a circle",
          gaussians_keys, create_8gaussians)
TOY_CLASS(rings_class, "rings", "concentric circles, uniform per unit length",
          rings_keys, create_rings)
TOY_CLASS(checkerboard_class, "checkerboard", "uniform on the dark cells of a 4x4 board",
          checkerboard_keys, create_checkerboard)
TOY_CLASS(pinwheel_class, "pinwheel", "five curved arms (FFJORD pinwheel)",
          pinwheel_keys, create_pinwheel)
TOY_CLASS(spirals_class, "2spirals", "two interleaved spirals (FFJORD 2spirals)",
          spirals_keys, create_2spirals)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    static const fl_dataset_class *const classes[] = {
        &moons_class, &gaussians_class, &rings_class,
        &checkerboard_class, &pinwheel_class, &spirals_class,
    };
    (void)host;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        fl_status st = r->add(r, FL_KIND_DATASET, &classes[i]->base);
        if (st != FL_OK)
            return st;
    }
    return FL_OK;
}

FL_PLUGIN("datasets-toy2d", "1.0.0", init)
