/* llvm_step_kern.c — the loops of a step's kernels as LLVM IR (prefix llvm_step_).
 *
 * Every kernel becomes two functions: a body taking one `noalias` pointer per buffer it
 * touches plus (part, nparts), and a task wrapper fn(void **args, part, nparts) that loads the
 * pointers and calls the body, so the entry point can hand it to rt_pool_run.  A part always
 * covers a fixed slice of independent outputs (rows of the outermost loop, images of a batch,
 * a GEMM's tiles) and computes each of them in the same order whatever the number of parts:
 * results do not depend on the number of threads.
 *
 * Loops are plain counted loops over concrete shapes (every stride is a constant), written
 * so that LLVM's loop vectoriser handles the innermost one: unit or zero strides, no calls.
 * exp, log, tanh and erf in f32 are polynomials written here (Cephes), so loops with them,
 * sigmoid, gelu and softmax vectorise; pow, log1p and f64 math stay scalar libm calls.
 * Floating-point: no fast-math anywhere except `reassoc` on the sums of reductions (so they
 * vectorise); every other operation rounds exactly as the interpreter's f32 results. */
#include "llvm.h"

#include <llvm-c/DebugInfo.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef LlvmStepGen Gen;

enum { MAXACC = 128 };

/* ---- small IR helpers ---- */

static LLVMValueRef ci(Gen *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }
static LLVMValueRef ci32(Gen *c, int64_t v) { return LLVMConstInt(c->i32, (unsigned long long)v, 1); }
static LLVMValueRef cf(LLVMTypeRef t, double v) { return LLVMConstReal(t, v); }
static LLVMBasicBlockRef block(Gen *c, const char *name) { return LLVMAppendBasicBlockInContext(c->cx, c->fn, name); }
static void at(Gen *c, LLVMBasicBlockRef bb) { LLVMPositionBuilderAtEnd(c->b, bb); }
static LLVMValueRef add(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildAdd(c->b, x, y, ""); }
static LLVMValueRef mul(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildMul(c->b, x, y, ""); }
static LLVMValueRef sdiv(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildSDiv(c->b, x, y, ""); }
static LLVMValueRef slt(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildICmp(c->b, LLVMIntSLT, x, y, ""); }
static LLVMValueRef sel(Gen *c, LLVMValueRef k, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildSelect(c->b, k, x, y, ""); }
static LLVMValueRef fcmp(Gen *c, LLVMRealPredicate p, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFCmp(c->b, p, x, y, ""); }
static LLVMValueRef isnan_(Gen *c, LLVMValueRef x) { return fcmp(c, LLVMRealUNO, x, x); }
static LLVMValueRef or_(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildOr(c->b, x, y, ""); }
static LLVMValueRef and_(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildAnd(c->b, x, y, ""); }
static LLVMValueRef fadd_(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFAdd(c->b, x, y, ""); }
static LLVMValueRef fsub_(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFSub(c->b, x, y, ""); }
static LLVMValueRef fmul_(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFMul(c->b, x, y, ""); }
static LLVMValueRef fdiv_(Gen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFDiv(c->b, x, y, ""); }

static LLVMValueRef reassoc(LLVMValueRef v) {
  if (LLVMCanValueUseFastMathFlags(v))
    LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc);
  return v;
}

static LLVMValueRef call(Gen *c, LLVMValueRef fn, LLVMValueRef *args, unsigned n) {
  return LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, args, n, "");
}

static LLVMValueRef intr(Gen *c, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n) {
  LLVMValueRef fn = llvm_intrinsic(c->mod, name, &t, 1);
  return call(c, fn, args, n);
}

static LLVMValueRef intr1(Gen *c, const char *name, LLVMValueRef x) {
  return intr(c, name, LLVMTypeOf(x), &x, 1);
}

static LLVMValueRef fma_(Gen *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef d) {
  LLVMValueRef args[] = {a, b, d};
  return intr(c, c->host->fma ? "llvm.fma" : "llvm.fmuladd", LLVMTypeOf(a), args, 3);
}

static void fn_attr(Gen *c, LLVMValueRef fn, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(c->cx, kind, 0));
}

/* A libm function of n arguments of type t (treated as pure: no errno is read). */
static LLVMValueRef libm(Gen *c, const char *name, LLVMTypeRef t, int n) {
  LLVMValueRef fn = LLVMGetNamedFunction(c->mod, name);
  if (!fn) {
    LLVMTypeRef ps[2] = {t, t};
    fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(t, ps, (unsigned)n, 0));
    fn_attr(c, fn, "nounwind");
    fn_attr(c, fn, "willreturn");
    unsigned mem = LLVMGetEnumAttributeKindForName("memory", 6);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(c->cx, mem, 0));
  }
  return fn;
}

static LLVMValueRef libm1(Gen *c, const char *f32name, const char *f64name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return call(c, libm(c, t == c->f32 ? f32name : f64name, t, 1), &x, 1);
}

static LLVMTypeRef reg_type(Gen *c, IrDtype t) {
  switch (t) {
  case IR_F64: return c->f64;
  case IR_F32: case IR_BF16: case IR_F16: return c->f32; /* 16-bit values: f32 registers */
  case IR_I64: return c->i64;
  case IR_I32: return c->i32;
  case IR_U8: return c->i8;
  default: return c->i1;
  }
}

static LLVMTypeRef mem_type(Gen *c, IrDtype t) {
  if (t == IR_BF16 || t == IR_F16)
    return LLVMInt16TypeInContext(c->cx);
  return t == IR_BOOL ? c->i8 : reg_type(c, t);
}

/* f32 -> the bits of the nearest bf16 (ties to even) with integer ops, so no target needs
 * __truncsfbf2 and the result is the interpreter's: NaN -> 0x7fc0 as ir_store. */
static LLVMValueRef bf16_bits(Gen *c, LLVMValueRef x) {
  LLVMValueRef u = LLVMBuildBitCast(c->b, x, c->i32, "");
  LLVMValueRef odd = LLVMBuildAnd(c->b, LLVMBuildLShr(c->b, u, LLVMConstInt(c->i32, 16, 0), ""), LLVMConstInt(c->i32, 1, 0), "");
  LLVMValueRef r = LLVMBuildAdd(c->b, u, LLVMBuildAdd(c->b, odd, LLVMConstInt(c->i32, 0x7fff, 0), ""), "");
  r = LLVMBuildLShr(c->b, r, LLVMConstInt(c->i32, 16, 0), "");
  LLVMValueRef nan = LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, "");
  r = LLVMBuildSelect(c->b, nan, LLVMConstInt(c->i32, 0x7fc0, 0), r, "");
  return LLVMBuildTrunc(c->b, r, LLVMInt16TypeInContext(c->cx), "");
}

static LLVMValueRef bf16_value(Gen *c, LLVMValueRef bits) {
  LLVMValueRef u = LLVMBuildShl(c->b, LLVMBuildZExt(c->b, bits, c->i32, ""), LLVMConstInt(c->i32, 16, 0), "");
  return LLVMBuildBitCast(c->b, u, c->f32, "");
}

/* f32 or f64 -> f16 bits: fptrunc rounds to nearest even (vcvtps2ph with F16C) */
static LLVMValueRef f16_bits(Gen *c, LLVMValueRef x) {
  LLVMTypeRef h = LLVMHalfTypeInContext(c->cx), i16 = LLVMInt16TypeInContext(c->cx);
  LLVMValueRef r = LLVMBuildBitCast(c->b, LLVMBuildFPTrunc(c->b, x, h, ""), i16, "");
  return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, ""), LLVMConstInt(i16, 0x7e00, 0), r, ""); /* as ir_store */
}

static LLVMValueRef f16_value(Gen *c, LLVMValueRef bits) {
  return LLVMBuildFPExt(c->b, LLVMBuildBitCast(c->b, bits, LLVMHalfTypeInContext(c->cx), ""), c->f32, "");
}

static LLVMValueRef const_of(Gen *c, IrDtype t, double v) {
  if (ir_dtype_is_float(t))
    return cf(reg_type(c, t), ir_round(t, v));
  if (t == IR_BOOL)
    return LLVMConstInt(c->i1, v != 0, 0);
  return LLVMConstInt(reg_type(c, t), (unsigned long long)(int64_t)ir_round(t, v), 1);
}

static LLVMValueRef gep(Gen *c, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildInBoundsGEP2(c->b, t, p, &i, 1, "");
}

static LLVMValueRef load_t(Gen *c, IrDtype t, LLVMValueRef base, LLVMValueRef i) {
  LLVMTypeRef mt = mem_type(c, t);
  LLVMValueRef v = LLVMBuildLoad2(c->b, mt, gep(c, mt, base, i), "");
  LLVMSetAlignment(v, (unsigned)ir_dtype_size(t));
  if (t == IR_BOOL)
    v = LLVMBuildICmp(c->b, LLVMIntNE, v, LLVMConstInt(c->i8, 0, 0), "");
  if (t == IR_BF16 || t == IR_F16)
    v = t == IR_BF16 ? bf16_value(c, v) : f16_value(c, v);
  return v;
}

static void store_t(Gen *c, IrDtype t, LLVMValueRef base, LLVMValueRef i, LLVMValueRef v) {
  LLVMTypeRef mt = mem_type(c, t);
  if (t == IR_BOOL)
    v = LLVMBuildZExt(c->b, v, c->i8, "");
  if (t == IR_BF16 || t == IR_F16) /* the register already holds a value of t: exact */
    v = t == IR_BF16 ? bf16_bits(c, v) : f16_bits(c, v);
  LLVMSetAlignment(LLVMBuildStore(c->b, v, gep(c, mt, base, i)), (unsigned)ir_dtype_size(t));
}

/* ---- loops: for (iv = start; iv < end; iv++) with loop-carried values ---- */

typedef struct Loop {
  LLVMBasicBlockRef head, exit;
  LLVMValueRef iv, car[4];
  int ncar;
  bool novec; /* llvm.loop.vectorize.enable = false on its back edge */
} Loop;

/* !{self, !{"llvm.loop.vectorize.enable", i1 false}}: a loop whose inner loop LLVM unrolls
 * completely must not be vectorised across its iterations (gathers and scatters) */
static LLVMMetadataRef novec_md(Gen *c) {
  LLVMMetadataRef kv[2] = {LLVMMDStringInContext2(c->cx, "llvm.loop.vectorize.enable", 26),
                           LLVMValueAsMetadata(LLVMConstInt(c->i1, 0, 0))};
  LLVMMetadataRef opt = LLVMMDNodeInContext2(c->cx, kv, 2);
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(c->cx, NULL, 0);
  LLVMMetadataRef ops[2] = {tmp, opt};
  LLVMMetadataRef node = LLVMMDNodeInContext2(c->cx, ops, 2);
  LLVMMetadataReplaceAllUsesWith(tmp, node); /* the first operand refers to the node itself */
  return node;
}

static LLVMValueRef loop_open(Gen *c, Loop *l, LLVMValueRef start, LLVMValueRef end, int ncar,
                              const LLVMValueRef *init) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  l->head = block(c, "loop");
  LLVMBasicBlockRef body = block(c, "body");
  l->exit = block(c, "done");
  LLVMBuildBr(c->b, l->head);
  at(c, l->head);
  l->iv = LLVMBuildPhi(c->b, c->i64, "");
  LLVMAddIncoming(l->iv, &start, &pre, 1);
  l->ncar = ncar;
  l->novec = false;
  for (int i = 0; i < ncar; i++) {
    l->car[i] = LLVMBuildPhi(c->b, LLVMTypeOf(init[i]), "");
    LLVMValueRef v = init[i];
    LLVMAddIncoming(l->car[i], &v, &pre, 1);
  }
  LLVMBuildCondBr(c->b, slt(c, l->iv, end), body, l->exit);
  at(c, body);
  return l->iv;
}

static void loop_close(Gen *c, Loop *l, const LLVMValueRef *next) {
  LLVMValueRef n = LLVMBuildNSWAdd(c->b, l->iv, ci(c, 1), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
  LLVMValueRef br = LLVMBuildBr(c->b, l->head);
  if (l->novec)
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(c->cx, "llvm.loop", 9),
                    LLVMMetadataAsValue(c->cx, novec_md(c)));
  LLVMAddIncoming(l->iv, &n, &latch, 1);
  for (int i = 0; i < l->ncar; i++) {
    LLVMValueRef v = next[i];
    LLVMAddIncoming(l->car[i], &v, &latch, 1);
  }
  at(c, l->exit);
}

/* [d * part / nparts, d * (part + 1) / nparts) */
static void part_range(Gen *c, int64_t d, LLVMValueRef part, LLVMValueRef nparts, LLVMValueRef *lo,
                       LLVMValueRef *hi) {
  *lo = sdiv(c, mul(c, ci(c, d), part), nparts);
  *hi = sdiv(c, mul(c, ci(c, d), add(c, part, ci(c, 1))), nparts);
}

/* ---- buffers and functions ---- */

static int kbuf(Gen *c, int base, int64_t off) {
  for (int i = 0; i < c->nbuf; i++)
    if (c->buf[i].base == base && c->buf[i].off == off)
      return i;
  if (c->nbuf == c->capbuf) {
    c->capbuf = c->capbuf ? 2 * c->capbuf : 16;
    c->buf = realloc(c->buf, (size_t)c->capbuf * sizeof *c->buf);
    c->bufp = realloc(c->bufp, (size_t)c->capbuf * sizeof *c->bufp);
  }
  c->buf[c->nbuf] = (LlvmStepBuf){base, off};
  return c->nbuf++;
}

static bool is_layout_node(const IrGraph *g, int v) {
  IrOp op = g->node[v].op;
  return op == IR_RESHAPE || op == IR_PERMUTE || op == IR_BROADCAST || op == IR_SLICE;
}

static int bytes_of(const FusePlan *p, int v) {
  const FuseValue *fv = &p->val[v];
  return fv->how == FUSE_MEM ? v : fv->how == FUSE_VIEW ? fv->of : -1;
}

/* Buffer of value v's bytes and v's element offset in it. */
static int value_buf(Gen *c, int v, int64_t *eoff) {
  int b = bytes_of(c->p, v);
  *eoff = c->p->val[v].voff;
  return kbuf(c, c->p->val[b].base, c->p->val[b].offset);
}

/* Starts the body of the current kernel: (ptr noalias x nbuf, i64 part, i64 nparts). */
static LLVMValueRef body_begin(Gen *c, int kid, const char *what) {
  LLVMTypeRef *ps = malloc((size_t)(c->nbuf + 2) * sizeof *ps);
  for (int i = 0; i < c->nbuf; i++)
    ps[i] = c->ptr;
  ps[c->nbuf] = c->i64;
  ps[c->nbuf + 1] = c->i64;
  char name[96];
  snprintf(name, sizeof name, "%s.k%d.%s", c->prefix, kid, what);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->voidt, ps, (unsigned)c->nbuf + 2, 0));
  free(ps);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  fn_attr(c, fn, "nounwind");
  fn_attr(c, fn, "noinline"); /* one function per kernel: the entry point stays small */
  if (c->host->vec_bits == 512)
    LLVMAddTargetDependentFunctionAttr(fn, "prefer-vector-width", "512");
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int i = 0; i < c->nbuf; i++) {
    LLVMAddAttributeAtIndex(fn, (unsigned)i + 1, LLVMCreateEnumAttribute(c->cx, noalias, 0));
    c->bufp[i] = LLVMGetParam(fn, (unsigned)i);
  }
  c->fn = fn;
  at(c, block(c, "entry"));
  return fn;
}

/* Work that cannot be cut: only part 0 does it. */
static void only_part0(Gen *c, LLVMValueRef fn) {
  LLVMBasicBlockRef work = block(c, "work"), ret = block(c, "skip");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntEQ, LLVMGetParam(fn, (unsigned)c->nbuf), ci(c, 0), ""), work, ret);
  at(c, ret);
  LLVMBuildRetVoid(c->b);
  at(c, work);
}

/* The task wrapper fn(void **args, part, nparts) of a body. */
static LLVMValueRef wrapper(Gen *c, LLVMValueRef body, int kid, const char *what) {
  LLVMTypeRef ps[] = {c->ptr, c->i64, c->i64};
  char name[96];
  snprintf(name, sizeof name, "%s.k%d.%s.task", c->prefix, kid, what);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->voidt, ps, 3, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  fn_attr(c, fn, "nounwind");
  c->fn = fn;
  at(c, block(c, "entry"));
  LLVMValueRef *args = malloc((size_t)(c->nbuf + 2) * sizeof *args);
  for (int i = 0; i < c->nbuf; i++) {
    LLVMValueRef slot = gep(c, c->ptr, LLVMGetParam(fn, 0), ci(c, i));
    args[i] = LLVMBuildLoad2(c->b, c->ptr, slot, "");
  }
  args[c->nbuf] = LLVMGetParam(fn, 1);
  args[c->nbuf + 1] = LLVMGetParam(fn, 2);
  call(c, body, args, (unsigned)c->nbuf + 2);
  LLVMBuildRetVoid(c->b);
  free(args);
  return fn;
}

/* ---- nests of loops over strided accesses ---- */

typedef void NestBody(Gen *c, void *ud, LLVMValueRef *off);

typedef struct {
  int rank;
  int64_t d[IR_MAX_RANK];
  int nacc;
  int64_t (*st)[IR_MAX_RANK]; /* per access */
  int pdim;                   /* the dimension cut into parts, -1: none */
  LLVMValueRef lo, hi;
  NestBody *body;
  void *ud;
  bool body_loops;            /* the body has its own loops: none of these is vectorised */
} Nest;

static void nest_level(Gen *c, const Nest *n, int dim, LLVMValueRef *off) {
  if (dim == n->rank) {
    n->body(c, n->ud, off);
    return;
  }
  Loop l;
  LLVMValueRef start = dim == n->pdim ? n->lo : ci(c, 0), end = dim == n->pdim ? n->hi : ci(c, n->d[dim]);
  LLVMValueRef iv = loop_open(c, &l, start, end, 0, NULL);
  l.novec = n->body_loops || dim + 1 < n->rank; /* only the innermost loop is vectorised */
  LLVMValueRef *inner = malloc((size_t)(n->nacc + 1) * sizeof *inner);
  for (int a = 0; a < n->nacc; a++)
    inner[a] = n->st[a][dim] ? add(c, off[a], mul(c, iv, ci(c, n->st[a][dim]))) : off[a];
  nest_level(c, n, dim + 1, inner);
  free(inner);
  loop_close(c, &l, NULL);
}

/* Drops size-1 dimensions and merges neighbours that every access walks as one (strides
 * st[i] == st[i+1] * d[i+1]); returns the new rank. */
static int coalesce(int rank, int64_t *d, int nacc, int64_t (*st)[IR_MAX_RANK]) {
  int r = 0;
  for (int i = 0; i < rank; i++) {
    if (d[i] == 1)
      continue;
    d[r] = d[i];
    for (int a = 0; a < nacc; a++)
      st[a][r] = st[a][i];
    r++;
  }
  for (int i = r - 2; i >= 0; i--) {
    bool ok = true;
    for (int a = 0; a < nacc && ok; a++)
      ok = st[a][i] == st[a][i + 1] * d[i + 1];
    if (!ok)
      continue;
    d[i] *= d[i + 1];
    for (int a = 0; a < nacc; a++)
      st[a][i] = st[a][i + 1];
    for (int j = i + 1; j < r - 1; j++) {
      d[j] = d[j + 1];
      for (int a = 0; a < nacc; a++)
        st[a][j] = st[a][j + 1];
    }
    r--;
  }
  return r;
}

/* Strides of value v (through its view) seen from a loop over shape S: right-aligned,
 * zero where v is broadcast. */
static void loop_strides(const FusePlan *p, int v, IrShape S, int64_t *st) {
  IrShape s = p->g->node[v].shape;
  const int64_t *vs = p->val[v].stride;
  for (int i = 0; i < S.rank; i++) {
    int j = i - (S.rank - s.rank);
    st[i] = j < 0 || s.d[j] == 1 ? 0 : vs[j];
  }
}

static void contig(IrShape s, int64_t *st) {
  int64_t acc = 1;
  for (int i = s.rank - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s.d[i];
  }
}

/* ---- math ---- */

/* expf as Cephes computes it: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial,
 * 2^n in two halves so that results down to the subnormals are right. Max error ~1 ulp. */
static LLVMValueRef exp_f32(Gen *c, LLVMValueRef x) {
  LLVMTypeRef f = c->f32;
  LLVMValueRef nan = isnan_(c, x);
  LLVMValueRef xc = sel(c, fcmp(c, LLVMRealOGT, x, cf(f, 89.0)), cf(f, 89.0), x);
  xc = sel(c, fcmp(c, LLVMRealOLT, xc, cf(f, -104.0)), cf(f, -104.0), xc);
  xc = sel(c, nan, cf(f, 0.0), xc);
  LLVMValueRef n = intr1(c, "llvm.rint", fmul_(c, xc, cf(f, 1.44269504088896341)));
  LLVMValueRef r = fma_(c, n, cf(f, -0.693359375), xc);
  r = fma_(c, n, cf(f, 2.12194440e-4), r);
  static const double P[] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                             4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
  LLVMValueRef y = cf(f, P[0]);
  for (int i = 1; i < 6; i++)
    y = fma_(c, y, r, cf(f, P[i]));
  LLVMValueRef r2 = fmul_(c, r, r);
  y = fma_(c, y, r2, fadd_(c, r, cf(f, 1.0)));
  LLVMValueRef ni = LLVMBuildFPToSI(c->b, n, c->i32, "");
  LLVMValueRef n1 = LLVMBuildAShr(c->b, ni, ci32(c, 1), ""), n2 = LLVMBuildSub(c->b, ni, n1, "");
  LLVMValueRef s1 = LLVMBuildBitCast(c->b, LLVMBuildShl(c->b, add(c, n1, ci32(c, 127)), ci32(c, 23), ""), f, "");
  LLVMValueRef s2 = LLVMBuildBitCast(c->b, LLVMBuildShl(c->b, add(c, n2, ci32(c, 127)), ci32(c, 23), ""), f, "");
  y = fmul_(c, fmul_(c, y, s1), s2);
  return sel(c, nan, x, y);
}

static LLVMValueRef exp_(Gen *c, LLVMValueRef x) {
  return LLVMTypeOf(x) == c->f32 ? exp_f32(c, x) : libm1(c, "expf", "exp", x);
}

static LLVMValueRef poly(Gen *c, LLVMValueRef x, const double *k, int n) { /* k[0] x^(n-1) + ... */
  LLVMValueRef y = cf(LLVMTypeOf(x), k[0]);
  for (int i = 1; i < n; i++)
    y = fma_(c, y, x, cf(LLVMTypeOf(x), k[i]));
  return y;
}

/* logf as Cephes computes it: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log(1 + (m - 1)) by a
 * degree-9 polynomial, e ln2 added in two parts. Subnormals are scaled by 2^23 first;
 * log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN stays NaN. Max error ~1 ulp. */
static LLVMValueRef log_f32(Gen *c, LLVMValueRef x) {
  LLVMTypeRef f = c->f32;
  LLVMValueRef sub = fcmp(c, LLVMRealOLT, x, cf(f, 0x1p-126));
  LLVMValueRef xs = sel(c, sub, fmul_(c, x, cf(f, 0x1p23)), x);
  LLVMValueRef bits = LLVMBuildBitCast(c->b, xs, c->i32, "");
  LLVMValueRef e = LLVMBuildSub(c->b, LLVMBuildAnd(c->b, LLVMBuildLShr(c->b, bits, ci32(c, 23), ""), ci32(c, 0xff), ""),
                                ci32(c, 126), "");
  e = LLVMBuildSub(c->b, e, sel(c, sub, ci32(c, 23), ci32(c, 0)), "");
  LLVMValueRef m = LLVMBuildBitCast(c->b, LLVMBuildOr(c->b, LLVMBuildAnd(c->b, bits, ci32(c, 0x007fffff), ""),
                                                      ci32(c, 0x3f000000), ""), f, ""); /* [0.5, 1) */
  LLVMValueRef small = fcmp(c, LLVMRealOLT, m, cf(f, 0.707106781186547524));
  e = LLVMBuildSub(c->b, e, sel(c, small, ci32(c, 1), ci32(c, 0)), "");
  LLVMValueRef a = fsub_(c, sel(c, small, fadd_(c, m, m), m), cf(f, 1));
  LLVMValueRef fe = LLVMBuildSIToFP(c->b, e, f, "");
  static const double P[] = {7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1,
                             1.4249322787E-1, -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1,
                             3.3333331174E-1};
  LLVMValueRef z = fmul_(c, a, a);
  LLVMValueRef y = fmul_(c, fmul_(c, poly(c, a, P, 9), a), z);
  y = fma_(c, fe, cf(f, -2.12194440e-4), y);
  y = fma_(c, z, cf(f, -0.5), y);
  LLVMValueRef r = fma_(c, fe, cf(f, 0.693359375), fadd_(c, a, y));
  r = sel(c, fcmp(c, LLVMRealOEQ, x, cf(f, INFINITY)), x, r);
  r = sel(c, fcmp(c, LLVMRealOEQ, x, cf(f, 0)), cf(f, -INFINITY), r);
  return sel(c, fcmp(c, LLVMRealULT, x, cf(f, 0)), cf(f, NAN), r); /* negative or NaN */
}

/* tanhf as Cephes: an odd polynomial below 0.625, 1 - 2 / (e^2|x| + 1) above. */
static LLVMValueRef tanh_f32(Gen *c, LLVMValueRef x) {
  LLVMTypeRef f = c->f32;
  LLVMValueRef ax = intr1(c, "llvm.fabs", x);
  LLVMValueRef big = fsub_(c, cf(f, 1), fdiv_(c, cf(f, 2), fadd_(c, exp_f32(c, fadd_(c, ax, ax)), cf(f, 1))));
  big = intr(c, "llvm.copysign", f, (LLVMValueRef[]){big, x}, 2);
  static const double P[] = {-5.70498872745E-3, 2.06390887954E-2, -5.37397155531E-2, 1.33314422036E-1,
                             -3.33332819422E-1};
  LLVMValueRef s = fmul_(c, x, x);
  LLVMValueRef small = fma_(c, fmul_(c, poly(c, s, P, 5), s), x, x);
  return sel(c, fcmp(c, LLVMRealOGE, ax, cf(f, 0.625)), big, small);
}

/* erf: x T(x^2) for |x| <= 1 and sign(x) (1 - e^(-x^2) P(1/x^2) / |x|) below 2 (Cephes'
 * erff), then Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7 where erf >= 0.995). */
static LLVMValueRef erf_f32(Gen *c, LLVMValueRef x) {
  LLVMTypeRef f = c->f32;
  static const double T[] = {7.853861353153693E-5, -8.010193625184903E-4, 5.188327685732524E-3,
                             -2.685381193529856E-2, 1.128358514861418E-1, -3.761262582423300E-1,
                             1.128379165726710E0};
  static const double P[] = {2.326819970068386E-2, -1.387039388740657E-1, 3.687424674597105E-1,
                             -5.824733027278666E-1, 6.210004621745983E-1, -4.944515323274145E-1,
                             3.404879937665872E-1, -2.741127028184656E-1, 5.638259427386472E-1};
  static const double A[] = {1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592, 0};
  LLVMValueRef ax = intr1(c, "llvm.fabs", x), z = fmul_(c, x, x);
  LLVMValueRef small = fmul_(c, x, poly(c, z, T, 7));
  LLVMValueRef q = fdiv_(c, cf(f, 1), ax), y = fmul_(c, q, q);
  LLVMValueRef t = fdiv_(c, cf(f, 1), fma_(c, ax, cf(f, 0.3275911), cf(f, 1)));
  LLVMValueRef e = exp_f32(c, LLVMBuildFNeg(c->b, z, ""));
  LLVMValueRef mid = fmul_(c, fmul_(c, e, q), poly(c, y, P, 9)), far = fmul_(c, e, poly(c, t, A, 6));
  LLVMValueRef erfc = sel(c, fcmp(c, LLVMRealOLT, ax, cf(f, 2)), mid, far);
  LLVMValueRef big = intr(c, "llvm.copysign", f, (LLVMValueRef[]){fsub_(c, cf(f, 1), erfc), x}, 2);
  return sel(c, fcmp(c, LLVMRealOGT, ax, cf(f, 1)), big, small); /* NaN: x T(NaN) = NaN */
}

/* Philox 4x32-10 of (counter = idx, step; key = seed): the first two words (philox.c). */
static void philox(Gen *c, uint64_t seed, LLVMValueRef idx, LLVMValueRef step, LLVMValueRef *w0,
                   LLVMValueRef *w1) {
  LLVMValueRef c0 = LLVMBuildTrunc(c->b, idx, c->i32, ""),
               c1 = LLVMBuildTrunc(c->b, LLVMBuildLShr(c->b, idx, ci(c, 32), ""), c->i32, ""),
               c2 = LLVMBuildTrunc(c->b, step, c->i32, ""),
               c3 = LLVMBuildTrunc(c->b, LLVMBuildLShr(c->b, step, ci(c, 32), ""), c->i32, "");
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    LLVMValueRef p0 = mul(c, LLVMBuildZExt(c->b, c0, c->i64, ""), ci(c, 0xD2511F53));
    LLVMValueRef p1 = mul(c, LLVMBuildZExt(c->b, c2, c->i64, ""), ci(c, 0xCD9E8D57));
    LLVMValueRef hi0 = LLVMBuildTrunc(c->b, LLVMBuildLShr(c->b, p0, ci(c, 32), ""), c->i32, "");
    LLVMValueRef hi1 = LLVMBuildTrunc(c->b, LLVMBuildLShr(c->b, p1, ci(c, 32), ""), c->i32, "");
    LLVMValueRef lo0 = LLVMBuildTrunc(c->b, p0, c->i32, ""), lo1 = LLVMBuildTrunc(c->b, p1, c->i32, "");
    c0 = LLVMBuildXor(c->b, LLVMBuildXor(c->b, hi1, c1, ""), LLVMConstInt(c->i32, k0, 0), "");
    c1 = lo1;
    c2 = LLVMBuildXor(c->b, LLVMBuildXor(c->b, hi0, c3, ""), LLVMConstInt(c->i32, k1, 0), "");
    c3 = lo0;
  }
  *w0 = c0;
  *w1 = c1;
}

/* (w >> 8) * 2^-24 as a double: the unit draw of philox.c */
static LLVMValueRef unit(Gen *c, LLVMValueRef w) {
  LLVMValueRef u = LLVMBuildUIToFP(c->b, LLVMBuildLShr(c->b, w, ci32(c, 8), ""), c->f64, "");
  return fmul_(c, u, cf(c->f64, 0x1p-24));
}

/* Converts a register value of dtype from to dtype to, as the interpreter's cast does. */
static LLVMValueRef convert(Gen *c, LLVMValueRef x, IrDtype from, IrDtype to) {
  if (from == to)
    return x;
  LLVMTypeRef tt = reg_type(c, to);
  bool ff = ir_dtype_is_float(from), ft = ir_dtype_is_float(to);
  if (ff && (to == IR_BF16 || to == IR_F16)) /* round to the 16-bit value, held in f32 */
    return to == IR_BF16 ? bf16_value(c, bf16_bits(c, from == IR_F64 ? LLVMBuildFPTrunc(c->b, x, c->f32, "") : x))
                         : f16_value(c, f16_bits(c, x));
  if (ff && LLVMTypeOf(x) == tt)
    return x; /* a 16-bit value widened to f32: already exact */
  if (ff && ft)
    return from == IR_F64 ? LLVMBuildFPTrunc(c->b, x, tt, "") : LLVMBuildFPExt(c->b, x, tt, "");
  if (ff) {
    if (to == IR_BOOL)
      return fcmp(c, LLVMRealUNE, x, cf(LLVMTypeOf(x), 0));
    LLVMTypeRef wide = to == IR_I64 ? c->i64 : c->i64; /* wrap narrower types like the interpreter */
    LLVMTypeRef tys[2] = {wide, LLVMTypeOf(x)};
    LLVMValueRef fn = llvm_intrinsic(c->mod, "llvm.fptosi.sat", tys, 2);
    LLVMValueRef v = call(c, fn, &x, 1);
    return to == IR_I64 ? v : LLVMBuildTrunc(c->b, v, tt, "");
  }
  bool uns = from == IR_U8 || from == IR_BOOL;
  if (ft)
    return uns ? LLVMBuildUIToFP(c->b, x, tt, "") : LLVMBuildSIToFP(c->b, x, tt, "");
  if (to == IR_BOOL)
    return LLVMBuildICmp(c->b, LLVMIntNE, x, LLVMConstInt(LLVMTypeOf(x), 0, 0), "");
  unsigned wf = LLVMGetIntTypeWidth(LLVMTypeOf(x)), wt = LLVMGetIntTypeWidth(tt);
  if (wt < wf)
    return LLVMBuildTrunc(c->b, x, tt, "");
  return uns ? LLVMBuildZExt(c->b, x, tt, "") : LLVMBuildSExt(c->b, x, tt, "");
}

/* ---- elementwise loops ---- */

typedef enum { A_LOAD, A_INDEX, A_STORE, A_FLAT, A_CLASS } AccKind;

typedef struct {
  AccKind kind;
  int v;  /* the value loaded or stored */
  int buf;
  int64_t off;
  IrDtype t;
} Acc;

typedef struct {
  int kid;
  Acc acc[MAXACC];
  int nacc;
  int64_t st[MAXACC][IR_MAX_RANK];
  LLVMValueRef *reg;   /* per node: its value in this iteration */
  LLVMValueRef *ld;    /* per access: the loaded value */
  LLVMValueRef err;    /* i8 alloca: an index out of range was seen */
  LLVMValueRef step;   /* the step operand of dropout / rand, loaded once */
  bool ok;
  char *msg;
  size_t msglen;
} Elem;

static int elem_acc(Gen *c, Elem *e, AccKind kind, int v, IrShape S) {
  for (int a = 0; a < e->nacc; a++)
    if (e->acc[a].kind == kind && e->acc[a].v == v)
      return a;
  if (e->nacc == MAXACC) {
    e->ok = false;
    return 0;
  }
  Acc *a = &e->acc[e->nacc];
  a->kind = kind;
  a->v = v;
  a->buf = -1;
  a->off = 0;
  a->t = v >= 0 ? c->g->node[v].dtype : IR_I64;
  switch (kind) {
  case A_LOAD: {
    const FusePlan *p = c->p;
    FuseValue w;
    if (is_layout_node(c->g, v) && p->val[v].kernel == e->kid && fuse_layout_view(p, v, &w)) {
      a->off = w.voff;
      a->buf = kbuf(c, p->val[w.of].base, p->val[w.of].offset);
      for (int i = 0; i < S.rank; i++)
        e->st[e->nacc][i] = w.stride[i];
    } else if (is_layout_node(c->g, v) && p->val[v].kernel == e->kid) {
      /* a reshape with no view: the loop walks the operand's shape (fuse.c) */
      int x = p->in[v][0];
      a->buf = value_buf(c, x, &a->off);
      loop_strides(p, x, S, e->st[e->nacc]);
    } else {
      a->buf = value_buf(c, v, &a->off);
      loop_strides(p, v, S, e->st[e->nacc]);
    }
    break;
  }
  case A_INDEX: { /* one_hot's index [..] read for [.., C]: aligned from the left */
    IrShape s = c->g->node[v].shape;
    a->buf = value_buf(c, v, &a->off);
    for (int i = 0; i < S.rank; i++)
      e->st[e->nacc][i] = i < s.rank && s.d[i] != 1 ? c->p->val[v].stride[i] : 0;
    break;
  }
  case A_STORE: {
    a->buf = value_buf(c, v, &a->off);
    contig(S, e->st[e->nacc]);
    break;
  }
  case A_FLAT:
    contig(S, e->st[e->nacc]);
    break;
  case A_CLASS:
    for (int i = 0; i < S.rank; i++)
      e->st[e->nacc][i] = i == S.rank - 1;
    break;
  }
  return e->nacc++;
}

/* Operand j of member id in this iteration. */
static LLVMValueRef operand(Gen *c, Elem *e, int id, int j) {
  int v = c->p->in[id][j];
  const FuseValue *fv = &c->p->val[v];
  if (fv->kernel == e->kid && (fv->how == FUSE_REG || fv->how == FUSE_MEM) && e->reg[v])
    return e->reg[v];
  if (fv->splat)
    return const_of(c, c->g->node[v].dtype, fv->imm);
  AccKind kind = c->g->node[id].op == IR_ONE_HOT ? A_INDEX : A_LOAD;
  for (int a = 0; a < e->nacc; a++)
    if (e->acc[a].kind == kind && e->acc[a].v == v)
      return e->ld[a];
  e->ok = false;
  return LLVMGetUndef(reg_type(c, c->g->node[v].dtype));
}

static LLVMValueRef iota(Elem *e, AccKind kind, LLVMValueRef *off) {
  for (int a = 0; a < e->nacc; a++)
    if (e->acc[a].kind == kind)
      return off[a];
  return NULL;
}

static bool unsigned_t(IrDtype t) { return t == IR_U8 || t == IR_BOOL; }

/* One elementwise node on register values. */
static LLVMValueRef elem_op(Gen *c, Elem *e, int id, LLVMValueRef *off) {
  const IrNode *n = &c->g->node[id];
  IrDtype t = n->dtype, t0 = n->nin ? c->g->node[c->p->in[id][0]].dtype : t;
  LLVMTypeRef T = reg_type(c, t);
  LLVMValueRef x[3] = {NULL, NULL, NULL};
  for (int j = 0; j < n->nin && j < 3; j++) {
    bool step = (n->op == IR_DROPOUT && j == 1) || ((n->op == IR_RAND_UNIFORM || n->op == IR_RAND_NORMAL) && j == 0);
    if (!step) /* the step operand was loaded once, before the loops */
      x[j] = operand(c, e, id, j);
  }
  LLVMValueRef a = x[0], b = x[1];
  bool fl = ir_dtype_is_float(t0);
  switch (n->op) {
  case IR_NEG: return fl ? LLVMBuildFNeg(c->b, a, "") : LLVMBuildNeg(c->b, a, "");
  case IR_ABS:
    if (fl)
      return intr1(c, "llvm.fabs", a);
    return unsigned_t(t) ? a : sel(c, slt(c, a, LLVMConstInt(T, 0, 0)), LLVMBuildNeg(c->b, a, ""), a);
  case IR_SIGN:
    if (fl) {
      LLVMValueRef z = sel(c, isnan_(c, a), a, cf(T, 0));
      z = sel(c, fcmp(c, LLVMRealOLT, a, cf(T, 0)), cf(T, -1), z);
      return sel(c, fcmp(c, LLVMRealOGT, a, cf(T, 0)), cf(T, 1), z);
    } else {
      LLVMValueRef zero = LLVMConstInt(T, 0, 0);
      LLVMValueRef gt = LLVMBuildICmp(c->b, unsigned_t(t) ? LLVMIntUGT : LLVMIntSGT, a, zero, "");
      LLVMValueRef z = sel(c, slt(c, a, zero), LLVMConstInt(T, (unsigned long long)-1, 1), zero);
      return unsigned_t(t) ? LLVMBuildZExt(c->b, gt, T, "") : sel(c, gt, LLVMConstInt(T, 1, 0), z);
    }
  case IR_EXP: return exp_(c, a);
  case IR_LOG: return T == c->f32 ? log_f32(c, a) : libm1(c, "logf", "log", a);
  case IR_SQRT: return intr1(c, "llvm.sqrt", a);
  case IR_RSQRT: return fdiv_(c, cf(T, 1), intr1(c, "llvm.sqrt", a));
  case IR_TANH: return T == c->f32 ? tanh_f32(c, a) : libm1(c, "tanhf", "tanh", a);
  case IR_ERF: return T == c->f32 ? erf_f32(c, a) : libm1(c, "erff", "erf", a);
  case IR_SIGMOID: { /* never exp of a large positive number */
    LLVMValueRef pos = fcmp(c, LLVMRealOGE, a, cf(T, 0));
    LLVMValueRef ex = exp_(c, sel(c, pos, LLVMBuildFNeg(c->b, a, ""), a));
    LLVMValueRef d = fadd_(c, cf(T, 1), ex);
    return sel(c, pos, fdiv_(c, cf(T, 1), d), fdiv_(c, ex, d));
  }
  case IR_RELU:
    if (fl)
      return sel(c, fcmp(c, LLVMRealOLE, a, cf(T, 0)), cf(T, 0), a);
    return sel(c, LLVMBuildICmp(c->b, LLVMIntSGT, a, LLVMConstInt(T, 0, 0), ""), a, LLVMConstInt(T, 0, 0));
  case IR_GELU: {
    LLVMValueRef h = fmul_(c, a, cf(T, 0.70710678118654752));
    LLVMValueRef ef = T == c->f32 ? erf_f32(c, h) : libm1(c, "erff", "erf", h);
    return fmul_(c, fmul_(c, cf(T, 0.5), a), fadd_(c, cf(T, 1), ef));
  }
  case IR_LEAKY_RELU:
    return sel(c, fcmp(c, LLVMRealOGT, a, cf(T, 0)), a, fmul_(c, cf(T, n->a.value), a));
  case IR_CAST: return convert(c, a, t0, t);
  case IR_DETACH: return a;
  case IR_ADD: return fl ? fadd_(c, a, b) : add(c, a, b);
  case IR_SUB: return fl ? fsub_(c, a, b) : LLVMBuildSub(c->b, a, b, "");
  case IR_MUL: return fl ? fmul_(c, a, b) : mul(c, a, b);
  case IR_DIV: return fdiv_(c, a, b);
  case IR_POW: {
    LLVMValueRef args[] = {a, b};
    return intr(c, "llvm.pow", T, args, 2);
  }
  case IR_MAXIMUM: case IR_MINIMUM: {
    bool mx = n->op == IR_MAXIMUM;
    if (fl) /* NaN in a wins; NaN in b too (a > NaN is false) */
      return sel(c, or_(c, isnan_(c, a), fcmp(c, mx ? LLVMRealOGT : LLVMRealOLT, a, b)), a, b);
    LLVMIntPredicate pr = unsigned_t(t) ? (mx ? LLVMIntUGT : LLVMIntULT) : (mx ? LLVMIntSGT : LLVMIntSLT);
    return sel(c, LLVMBuildICmp(c->b, pr, a, b, ""), a, b);
  }
  case IR_EQ: case IR_NE: case IR_LT: case IR_LE: case IR_GT: case IR_GE: {
    static const LLVMRealPredicate fp[] = {LLVMRealOEQ, LLVMRealUNE, LLVMRealOLT, LLVMRealOLE,
                                           LLVMRealOGT, LLVMRealOGE};
    static const LLVMIntPredicate sp[] = {LLVMIntEQ, LLVMIntNE, LLVMIntSLT, LLVMIntSLE, LLVMIntSGT, LLVMIntSGE};
    static const LLVMIntPredicate up[] = {LLVMIntEQ, LLVMIntNE, LLVMIntULT, LLVMIntULE, LLVMIntUGT, LLVMIntUGE};
    int i = n->op - IR_EQ;
    if (fl)
      return fcmp(c, fp[i], a, b);
    return LLVMBuildICmp(c->b, unsigned_t(t0) ? up[i] : sp[i], a, b, "");
  }
  case IR_WHERE: return sel(c, a, b, x[2]);
  case IR_ONE_HOT: {
    LLVMValueRef idx = convert(c, a, t0, IR_I64), cls = iota(e, A_CLASS, off);
    LLVMValueRef bad = or_(c, slt(c, idx, ci(c, 0)), LLVMBuildICmp(c->b, LLVMIntSGE, idx, ci(c, n->a.n), ""));
    LLVMValueRef was = LLVMBuildLoad2(c->b, c->i8, e->err, "");
    LLVMBuildStore(c->b, or_(c, was, LLVMBuildZExt(c->b, bad, c->i8, "")), e->err);
    return sel(c, LLVMBuildICmp(c->b, LLVMIntEQ, idx, cls, ""), cf(T, 1), cf(T, 0));
  }
  case IR_DROPOUT: {
    double p = n->a.value, scale = p < 1 ? 1 / (1 - p) : 0;
    double thr = ceil(p * 0x1p24);
    LLVMValueRef w0, w1;
    philox(c, n->a.seed, iota(e, A_FLAT, off), e->step, &w0, &w1);
    LLVMValueRef keep = LLVMBuildICmp(c->b, LLVMIntUGE, LLVMBuildLShr(c->b, w0, ci32(c, 8), ""),
                                      ci32(c, thr > 0x1p24 ? (int64_t)0x1000000 : (int64_t)thr), "");
    LLVMValueRef scaled = t == IR_F32 ? LLVMBuildFPTrunc(c->b, fmul_(c, LLVMBuildFPExt(c->b, a, c->f64, ""),
                                                                      cf(c->f64, scale)), T, "")
                                      : fmul_(c, a, cf(T, scale));
    return sel(c, keep, scaled, cf(T, 0));
  }
  case IR_RAND_UNIFORM: case IR_RAND_NORMAL: {
    LLVMValueRef w0, w1, r;
    philox(c, n->a.seed, iota(e, A_FLAT, off), e->step, &w0, &w1);
    if (n->op == IR_RAND_UNIFORM) {
      r = fadd_(c, cf(c->f64, n->a.value), fmul_(c, cf(c->f64, n->a.value2 - n->a.value), unit(c, w0)));
    } else {
      LLVMValueRef u1 = fadd_(c, unit(c, w0), cf(c->f64, 0x1p-24)), u2 = unit(c, w1);
      LLVMValueRef l = fmul_(c, cf(c->f64, -2), libm1(c, "logf", "log", u1));
      LLVMValueRef cs = libm1(c, "cosf", "cos", fmul_(c, cf(c->f64, 6.283185307179586), u2));
      r = fmul_(c, intr1(c, "llvm.sqrt", l), cs);
      r = fadd_(c, cf(c->f64, n->a.value), fmul_(c, cf(c->f64, n->a.value2), r));
    }
    return t == IR_F64 ? r : LLVMBuildFPTrunc(c->b, r, T, "");
  }
  default:
    e->ok = false;
    return LLVMGetUndef(T);
  }
}

static void elem_body(Gen *c, void *ud, LLVMValueRef *off) {
  Elem *e = ud;
  for (int a = 0; a < e->nacc; a++) {
    Acc *ac = &e->acc[a];
    if (ac->kind != A_LOAD && ac->kind != A_INDEX)
      continue;
    LLVMValueRef i = ac->off ? add(c, off[a], ci(c, ac->off)) : off[a];
    e->ld[a] = load_t(c, ac->t, c->bufp[ac->buf], i);
    if (ac->kind == A_LOAD && is_layout_node(c->g, ac->v) && c->p->val[ac->v].kernel == e->kid)
      e->reg[ac->v] = e->ld[a];
  }
  const FuseKernel *k = &c->p->k[e->kid];
  for (int i = 0; i < k->nnode; i++) {
    int id = k->node[i];
    if (!is_layout_node(c->g, id))
      e->reg[id] = elem_op(c, e, id, off);
  }
  for (int a = 0; a < e->nacc; a++) {
    Acc *ac = &e->acc[a];
    if (ac->kind != A_STORE)
      continue;
    LLVMValueRef i = ac->off ? add(c, off[a], ci(c, ac->off)) : off[a];
    store_t(c, ac->t, c->bufp[ac->buf], i, e->reg[ac->v]);
  }
}

static LLVMValueRef gen_elemwise(Gen *c, int kid, char *err, size_t errlen) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  IrShape S = k->shape;
  Elem *e = calloc(1, sizeof *e);
  e->kid = kid;
  e->ok = true;
  bool flags = false, step_needed = false;
  int step_v = -1;
  for (int i = 0; i < k->nnode; i++) {
    int id = k->node[i];
    const IrNode *n = &c->g->node[id];
    if (is_layout_node(c->g, id)) {
      elem_acc(c, e, A_LOAD, id, S);
    } else {
      for (int j = 0; j < n->nin; j++) {
        int v = p->in[id][j];
        const FuseValue *fv = &p->val[v];
        if ((fv->kernel == kid && (fv->how == FUSE_REG || fv->how == FUSE_MEM)) || fv->splat)
          continue;
        if ((n->op == IR_DROPOUT && j == 1) || ((n->op == IR_RAND_UNIFORM || n->op == IR_RAND_NORMAL) && j == 0)) {
          step_needed = true;
          step_v = v;
          continue;
        }
        elem_acc(c, e, n->op == IR_ONE_HOT ? A_INDEX : A_LOAD, v, S);
      }
    }
    if (n->op == IR_ONE_HOT) {
      elem_acc(c, e, A_CLASS, -1, S);
      flags = true;
    }
    if (n->op == IR_DROPOUT || n->op == IR_RAND_UNIFORM || n->op == IR_RAND_NORMAL)
      elem_acc(c, e, A_FLAT, -1, S);
  }
  for (int i = 0; i < k->nout; i++)
    elem_acc(c, e, A_STORE, k->out[i], S);
  int step_buf = -1;
  int64_t step_off = 0;
  if (step_needed && !p->val[step_v].splat)
    step_buf = value_buf(c, step_v, &step_off);
  int status = flags ? kbuf(c, FUSE_BASE_STATUS, 0) : -1;
  if (!e->ok) {
    snprintf(err, errlen, "kernel %d: more than %d accesses", kid, MAXACC);
    free(e);
    return NULL;
  }
  int64_t d[IR_MAX_RANK];
  for (int i = 0; i < S.rank; i++)
    d[i] = S.d[i];
  int rank = coalesce(S.rank, d, e->nacc, e->st);

  LLVMValueRef body = body_begin(c, kid, "elem");
  e->reg = calloc((size_t)c->g->n + 1, sizeof *e->reg);
  e->ld = calloc(MAXACC, sizeof *e->ld);
  if (flags) {
    e->err = LLVMBuildAlloca(c->b, c->i8, "err");
    LLVMBuildStore(c->b, LLVMConstInt(c->i8, 0, 0), e->err);
  }
  if (step_needed) {
    if (step_buf >= 0) {
      IrDtype st = c->g->node[step_v].dtype;
      e->step = convert(c, load_t(c, st, c->bufp[step_buf], ci(c, step_off)), st, IR_I64);
    } else {
      e->step = ci(c, (int64_t)p->val[step_v].imm);
    }
  }
  LLVMValueRef off0[MAXACC];
  for (int a = 0; a < e->nacc; a++)
    off0[a] = ci(c, 0);
  Nest nest = {.rank = rank, .nacc = e->nacc, .st = e->st, .pdim = -1, .body = elem_body, .ud = e};
  memcpy(nest.d, d, sizeof d);
  if (rank > 0) {
    nest.pdim = 0;
    part_range(c, d[0], LLVMGetParam(body, (unsigned)c->nbuf), LLVMGetParam(body, (unsigned)c->nbuf + 1),
               &nest.lo, &nest.hi);
  }
  nest_level(c, &nest, 0, off0);
  if (flags) {
    LLVMBasicBlockRef bad = block(c, "bad"), done = block(c, "ret");
    LLVMValueRef f = LLVMBuildLoad2(c->b, c->i8, e->err, "");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntNE, f, LLVMConstInt(c->i8, 0, 0), ""), bad, done);
    at(c, bad);
    store_t(c, IR_I64, c->bufp[status], ci(c, 0), ci(c, kid + 1));
    LLVMBuildBr(c->b, done);
    at(c, done);
  }
  LLVMBuildRetVoid(c->b);
  bool ok = e->ok;
  free(e->reg);
  free(e->ld);
  free(e);
  if (!ok) {
    snprintf(err, errlen, "kernel %d: an operation the loop generator does not know", kid);
    return NULL;
  }
  return wrapper(c, body, kid, "elem");
}

/* ---- reductions: sum / mean / max over any axes ---- */

typedef struct {
  IrOp op;
  IrDtype xt, at;  /* input dtype, accumulator dtype */
  int xb, ab;      /* buffers */
  int64_t xoff, aoff;
  int64_t sx, sa;  /* innermost strides */
  int64_t dlast;
  bool inner_red;
  LLVMValueRef lo, hi; /* the part's range when the innermost dim is the cut one */
  bool cut_inner;
} Red;

static LLVMValueRef red_combine(Gen *c, IrOp op, IrDtype at, LLVMValueRef acc, LLVMValueRef x, bool ra) {
  if (op == IR_MAX) {
    if (!ir_dtype_is_float(at))
      return sel(c, LLVMBuildICmp(c->b, LLVMIntSGT, x, acc, ""), x, acc);
    LLVMValueRef take = or_(c, isnan_(c, x), fcmp(c, LLVMRealOGT, x, acc));
    return sel(c, isnan_(c, acc), acc, sel(c, take, x, acc));
  }
  if (!ir_dtype_is_float(at))
    return add(c, acc, x);
  LLVMValueRef s = fadd_(c, acc, x);
  return ra ? reassoc(s) : s;
}

static void red_inner(Gen *c, void *ud, LLVMValueRef *off) {
  Red *r = ud;
  LLVMValueRef xo = add(c, off[0], ci(c, r->xoff)), ao = add(c, off[1], ci(c, r->aoff));
  LLVMValueRef xbuf = c->bufp[r->xb], abuf = c->bufp[r->ab];
  Loop l;
  if (r->inner_red) {
    LLVMValueRef init = load_t(c, r->at, abuf, ao);
    LLVMValueRef i = loop_open(c, &l, ci(c, 0), ci(c, r->dlast), 1, &init);
    LLVMValueRef x = convert(c, load_t(c, r->xt, xbuf, add(c, xo, mul(c, i, ci(c, r->sx)))), r->xt, r->at);
    LLVMValueRef nx = red_combine(c, r->op, r->at, l.car[0], x, true);
    loop_close(c, &l, &nx);
    store_t(c, r->at, abuf, ao, l.car[0]);
  } else {
    LLVMValueRef i = loop_open(c, &l, r->cut_inner ? r->lo : ci(c, 0), r->cut_inner ? r->hi : ci(c, r->dlast), 0, NULL);
    LLVMValueRef x = convert(c, load_t(c, r->xt, xbuf, add(c, xo, mul(c, i, ci(c, r->sx)))), r->xt, r->at);
    LLVMValueRef ai = add(c, ao, mul(c, i, ci(c, r->sa)));
    store_t(c, r->at, abuf, ai, red_combine(c, r->op, r->at, load_t(c, r->at, abuf, ai), x, false));
    loop_close(c, &l, NULL);
  }
}

static LLVMValueRef gen_reduce(Gen *c, int kid) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  const IrNode *n = &c->g->node[k->op];
  int x = p->in[k->op][0];
  IrShape xs = c->g->node[x].shape;
  bool red[IR_MAX_RANK] = {0};
  if (n->a.naxes == 0)
    for (int i = 0; i < xs.rank; i++)
      red[i] = true;
  for (int i = 0; i < n->a.naxes; i++)
    red[n->a.axes[i]] = true;
  Red r = {.op = n->op, .xt = c->g->node[x].dtype, .at = n->dtype};
  int64_t st[2][IR_MAX_RANK], d[IR_MAX_RANK];
  int64_t acc = 1;
  for (int i = xs.rank - 1; i >= 0; i--) {
    d[i] = xs.d[i];
    st[0][i] = p->val[x].stride[i];
    st[1][i] = red[i] ? 0 : acc;
    if (!red[i])
      acc *= xs.d[i];
  }
  int64_t nout = acc, count = ir_numel(xs) / (nout ? nout : 1);
  /* drop size-1 dims, merge neighbours of the same kind */
  int rank = 0;
  bool rf[IR_MAX_RANK];
  for (int i = 0; i < xs.rank; i++) {
    if (d[i] == 1)
      continue;
    d[rank] = d[i];
    st[0][rank] = st[0][i];
    st[1][rank] = st[1][i];
    rf[rank] = red[i];
    rank++;
  }
  for (int i = rank - 2; i >= 0; i--) {
    if (rf[i] != rf[i + 1] || st[0][i] != st[0][i + 1] * d[i + 1] || st[1][i] != st[1][i + 1] * d[i + 1])
      continue;
    d[i] *= d[i + 1];
    st[0][i] = st[0][i + 1];
    st[1][i] = st[1][i + 1];
    for (int j = i + 1; j < rank - 1; j++) {
      d[j] = d[j + 1];
      st[0][j] = st[0][j + 1];
      st[1][j] = st[1][j + 1];
      rf[j] = rf[j + 1];
    }
    rank--;
  }
  if (rank == 0) { /* one element in, one out */
    d[0] = 1;
    st[0][0] = st[1][0] = 0;
    rf[0] = true;
    rank = 1;
  }
  int pdim = -1;
  for (int i = 0; i < rank && pdim < 0; i++)
    if (!rf[i])
      pdim = i;
  r.xb = value_buf(c, x, &r.xoff);
  int64_t ooff;
  int ob = value_buf(c, k->op, &ooff);
  bool scratch = k->scratch_bytes > 0;
  if (scratch) {
    r.at = IR_F64;
    r.ab = kbuf(c, FUSE_BASE_ARENA, k->scratch);
    r.aoff = 0;
  } else {
    if (ir_dtype_is_float(n->dtype))
      r.at = n->dtype;
    r.ab = ob;
    r.aoff = ooff;
  }
  LLVMValueRef fn = body_begin(c, kid, "reduce");
  LLVMValueRef part = LLVMGetParam(fn, (unsigned)c->nbuf), nparts = LLVMGetParam(fn, (unsigned)c->nbuf + 1);
  LLVMValueRef olo = ci(c, 0), ohi = ci(c, nout), lo = NULL, hi = NULL;
  if (pdim < 0)
    only_part0(c, fn);
  if (pdim >= 0) {
    part_range(c, d[pdim], part, nparts, &lo, &hi);
    olo = mul(c, lo, ci(c, st[1][pdim]));
    ohi = mul(c, hi, ci(c, st[1][pdim]));
  }
  LLVMValueRef abuf = c->bufp[r.ab], obuf = c->bufp[ob];
  double ident = n->op == IR_MAX ? -INFINITY : 0;
  LLVMValueRef identv = ir_dtype_is_float(r.at) ? cf(reg_type(c, r.at), ident)
                        : n->op == IR_MAX ? LLVMConstInt(reg_type(c, r.at), r.at == IR_I64 ? (unsigned long long)INT64_MIN : (unsigned long long)(int64_t)INT32_MIN, 1)
                                          : LLVMConstInt(reg_type(c, r.at), 0, 0);
  Loop l;
  LLVMValueRef o = loop_open(c, &l, olo, ohi, 0, NULL);
  store_t(c, r.at, abuf, add(c, o, ci(c, r.aoff)), identv);
  loop_close(c, &l, NULL);
  r.dlast = d[rank - 1];
  r.sx = st[0][rank - 1];
  r.sa = st[1][rank - 1];
  r.inner_red = rf[rank - 1];
  r.cut_inner = pdim == rank - 1;
  r.lo = lo;
  r.hi = hi;
  Nest nest = {.rank = rank - 1, .nacc = 2, .st = st, .pdim = pdim < rank - 1 ? pdim : -1,
               .lo = lo, .hi = hi, .body = red_inner, .ud = &r, .body_loops = true};
  memcpy(nest.d, d, sizeof d);
  LLVMValueRef off0[2] = {ci(c, 0), ci(c, 0)};
  nest_level(c, &nest, 0, off0);
  if (scratch || n->op == IR_MEAN) {
    o = loop_open(c, &l, olo, ohi, 0, NULL);
    LLVMValueRef v = load_t(c, r.at, abuf, add(c, o, ci(c, r.aoff)));
    if (n->op == IR_MEAN)
      v = fdiv_(c, v, cf(reg_type(c, r.at), (double)count));
    store_t(c, n->dtype, obuf, add(c, o, ci(c, ooff)), convert(c, v, r.at, n->dtype));
    loop_close(c, &l, NULL);
  }
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "reduce");
}

/* ---- rows along an axis: softmax, log_softmax, argmax ---- */

typedef struct {
  const IrNode *n;
  IrDtype xt;
  int xb, yb;
  int64_t xoff, yoff, len, sx, sy;
} Rows;

static void softmax_row(Gen *c, void *ud, LLVMValueRef *off) {
  Rows *r = ud;
  LLVMTypeRef T = reg_type(c, r->xt);
  LLVMValueRef xb = c->bufp[r->xb], yb = c->bufp[r->yb];
  LLVMValueRef xo = add(c, off[0], ci(c, r->xoff)), yo = add(c, off[1], ci(c, r->yoff));
  Loop l;
  LLVMValueRef init = cf(T, -INFINITY);
  LLVMValueRef i = loop_open(c, &l, ci(c, 0), ci(c, r->len), 1, &init);
  LLVMValueRef x = load_t(c, r->xt, xb, add(c, xo, mul(c, i, ci(c, r->sx))));
  LLVMValueRef m1 = sel(c, fcmp(c, LLVMRealOGT, x, l.car[0]), x, l.car[0]);
  loop_close(c, &l, &m1);
  LLVMValueRef m = l.car[0];
  init = cf(T, 0);
  i = loop_open(c, &l, ci(c, 0), ci(c, r->len), 1, &init);
  x = load_t(c, r->xt, xb, add(c, xo, mul(c, i, ci(c, r->sx))));
  LLVMValueRef s1 = reassoc(fadd_(c, l.car[0], exp_(c, fsub_(c, x, m))));
  loop_close(c, &l, &s1);
  LLVMValueRef sum = l.car[0];
  LLVMValueRef lsum = r->n->op == IR_LOG_SOFTMAX ? libm1(c, "logf", "log", sum) : NULL;
  i = loop_open(c, &l, ci(c, 0), ci(c, r->len), 0, NULL);
  x = load_t(c, r->xt, xb, add(c, xo, mul(c, i, ci(c, r->sx))));
  LLVMValueRef y = r->n->op == IR_SOFTMAX ? fdiv_(c, exp_(c, fsub_(c, x, m)), sum) : fsub_(c, fsub_(c, x, m), lsum);
  store_t(c, r->xt, yb, add(c, yo, mul(c, i, ci(c, r->sy))), y);
  loop_close(c, &l, NULL);
}

static void argmax_row(Gen *c, void *ud, LLVMValueRef *off) {
  Rows *r = ud;
  LLVMValueRef xb = c->bufp[r->xb], yb = c->bufp[r->yb];
  LLVMValueRef xo = add(c, off[0], ci(c, r->xoff)), yo = add(c, off[1], ci(c, r->yoff));
  Loop l;
  LLVMValueRef init[2] = {load_t(c, r->xt, xb, xo), ci(c, 0)};
  LLVMValueRef i = loop_open(c, &l, ci(c, 1), ci(c, r->len), 2, init);
  LLVMValueRef x = load_t(c, r->xt, xb, add(c, xo, mul(c, i, ci(c, r->sx))));
  LLVMValueRef bv = l.car[0];
  /* the first maximum wins; NaN counts as the maximum */
  LLVMValueRef take = and_(c, LLVMBuildNot(c->b, isnan_(c, bv), ""), or_(c, isnan_(c, x), fcmp(c, LLVMRealOGT, x, bv)));
  LLVMValueRef next[2] = {sel(c, take, x, bv), sel(c, take, i, l.car[1])};
  loop_close(c, &l, next);
  store_t(c, r->n->dtype, yb, yo, convert(c, l.car[1], IR_I64, r->n->dtype));
}

static LLVMValueRef gen_rows(Gen *c, int kid) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  const IrNode *n = &c->g->node[k->op];
  int x = p->in[k->op][0];
  IrShape xs = c->g->node[x].shape;
  int ax = n->a.axis;
  Rows r = {.n = n, .xt = c->g->node[x].dtype, .len = xs.d[ax], .sx = p->val[x].stride[ax]};
  int64_t yst[IR_MAX_RANK], st[2][IR_MAX_RANK], d[IR_MAX_RANK];
  IrShape ys = n->op == IR_ARGMAX ? xs : n->shape; /* argmax: y strides over x's dims, 0 on ax */
  if (n->op == IR_ARGMAX)
    ys.d[ax] = 1;
  contig(ys, yst);
  r.sy = n->op == IR_ARGMAX ? 0 : yst[ax];
  int rank = 0;
  for (int i = 0; i < xs.rank; i++) {
    if (i == ax || xs.d[i] == 1)
      continue;
    d[rank] = xs.d[i];
    st[0][rank] = p->val[x].stride[i];
    st[1][rank] = yst[i];
    rank++;
  }
  r.xb = value_buf(c, x, &r.xoff);
  r.yb = value_buf(c, k->op, &r.yoff);
  LLVMValueRef fn = body_begin(c, kid, "rows");
  Nest nest = {.rank = rank, .nacc = 2, .st = st, .pdim = -1,
               .body = n->op == IR_ARGMAX ? argmax_row : softmax_row, .ud = &r, .body_loops = true};
  memcpy(nest.d, d, sizeof d);
  if (rank > 0) {
    nest.pdim = 0;
    part_range(c, d[0], LLVMGetParam(fn, (unsigned)c->nbuf), LLVMGetParam(fn, (unsigned)c->nbuf + 1),
               &nest.lo, &nest.hi);
  } else {
    only_part0(c, fn);
  }
  LLVMValueRef off0[2] = {ci(c, 0), ci(c, 0)};
  nest_level(c, &nest, 0, off0);
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "rows");
}

/* ---- losses: one task, double accumulators ---- */

static LLVMValueRef gen_class_loss(Gen *c, int kid) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  const IrNode *n = &c->g->node[k->op];
  int x = p->in[k->op][0], t = p->in[k->op][1];
  IrShape xs = c->g->node[x].shape;
  IrDtype xt = c->g->node[x].dtype, tt = c->g->node[t].dtype;
  int64_t Nn = xs.d[0], C = xs.d[1], xo, to, oo;
  int xb = value_buf(c, x, &xo), tb = value_buf(c, t, &to), ob = value_buf(c, k->op, &oo);
  int sb = kbuf(c, FUSE_BASE_STATUS, 0);
  LLVMValueRef fn = body_begin(c, kid, "loss");
  LLVMTypeRef D = c->f64;
  LLVMValueRef X = c->bufp[xb];
  Loop ln, lc;
  LLVMValueRef init = cf(D, 0);
  LLVMValueRef i = loop_open(c, &ln, ci(c, 0), ci(c, Nn), 1, &init);
  LLVMValueRef total = ln.car[0];
  LLVMValueRef tv = convert(c, load_t(c, tt, c->bufp[tb], add(c, i, ci(c, to))), tt, IR_I64);
  LLVMValueRef bad = or_(c, slt(c, tv, ci(c, 0)), LLVMBuildICmp(c->b, LLVMIntSGE, tv, ci(c, C), ""));
  LLVMBasicBlockRef bbad = block(c, "bad"), bok = block(c, "ok"), bnext = block(c, "next");
  LLVMBuildCondBr(c->b, bad, bbad, bok);
  at(c, bbad);
  store_t(c, IR_I64, c->bufp[sb], ci(c, 0), ci(c, kid + 1));
  store_t(c, IR_I64, c->bufp[sb], ci(c, 1), tv);
  store_t(c, IR_I64, c->bufp[sb], ci(c, 2), i);
  LLVMBuildBr(c->b, bnext);
  at(c, bok);
  LLVMValueRef row = add(c, mul(c, i, ci(c, C)), ci(c, xo));
  LLVMValueRef xt_ = convert(c, load_t(c, xt, X, add(c, row, tv)), xt, IR_F64), contrib;
  if (n->op == IR_NLL_LOSS) {
    contrib = LLVMBuildFNeg(c->b, xt_, "");
  } else {
    double eps = n->a.value;
    LLVMValueRef mi = cf(D, -INFINITY);
    LLVMValueRef j = loop_open(c, &lc, ci(c, 0), ci(c, C), 1, &mi);
    LLVMValueRef v = convert(c, load_t(c, xt, X, add(c, row, j)), xt, IR_F64);
    LLVMValueRef m1 = sel(c, fcmp(c, LLVMRealOGT, v, lc.car[0]), v, lc.car[0]);
    loop_close(c, &lc, &m1);
    LLVMValueRef m = lc.car[0];
    LLVMValueRef z = cf(D, 0);
    j = loop_open(c, &lc, ci(c, 0), ci(c, C), 1, &z);
    v = convert(c, load_t(c, xt, X, add(c, row, j)), xt, IR_F64);
    LLVMValueRef s1 = fadd_(c, lc.car[0], libm1(c, "expf", "exp", fsub_(c, v, m)));
    loop_close(c, &lc, &s1);
    LLVMValueRef lse = fadd_(c, m, libm1(c, "logf", "log", lc.car[0]));
    contrib = fmul_(c, cf(D, -(1 - eps)), fsub_(c, xt_, lse));
    if (eps != 0) {
      j = loop_open(c, &lc, ci(c, 0), ci(c, C), 1, &z);
      v = convert(c, load_t(c, xt, X, add(c, row, j)), xt, IR_F64);
      LLVMValueRef a1 = fadd_(c, lc.car[0], fsub_(c, v, lse));
      loop_close(c, &lc, &a1);
      contrib = fsub_(c, contrib, fmul_(c, cf(D, eps / (double)C), lc.car[0]));
    }
  }
  LLVMValueRef t1 = fadd_(c, total, contrib);
  LLVMBasicBlockRef okend = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, bnext);
  at(c, bnext);
  LLVMValueRef tot = LLVMBuildPhi(c->b, D, "");
  LLVMValueRef vals[2] = {total, t1};
  LLVMBasicBlockRef bbs[2] = {bbad, okend};
  LLVMAddIncoming(tot, vals, bbs, 2);
  loop_close(c, &ln, &tot);
  LLVMValueRef mean = fdiv_(c, ln.car[0], cf(D, (double)Nn));
  store_t(c, n->dtype, c->bufp[ob], ci(c, oo), convert(c, mean, IR_F64, n->dtype));
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "loss");
}

static LLVMValueRef gen_pair_loss(Gen *c, int kid) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  const IrNode *n = &c->g->node[k->op];
  int a = p->in[k->op][0], b = p->in[k->op][1];
  IrDtype t = c->g->node[a].dtype;
  int64_t cnt = ir_numel(c->g->node[a].shape), ao, bo, oo;
  int ab = value_buf(c, a, &ao), bb = value_buf(c, b, &bo), ob = value_buf(c, k->op, &oo);
  LLVMValueRef fn = body_begin(c, kid, "loss");
  LLVMTypeRef D = c->f64;
  Loop l;
  LLVMValueRef init = cf(D, 0);
  LLVMValueRef i = loop_open(c, &l, ci(c, 0), ci(c, cnt), 1, &init);
  LLVMValueRef x = convert(c, load_t(c, t, c->bufp[ab], add(c, i, ci(c, ao))), t, IR_F64);
  LLVMValueRef y = convert(c, load_t(c, t, c->bufp[bb], add(c, i, ci(c, bo))), t, IR_F64), v;
  if (n->op == IR_MSE_LOSS) {
    LLVMValueRef dd = fsub_(c, x, y);
    v = fmul_(c, dd, dd);
  } else { /* max(x, 0) - x y + log(1 + exp(-|x|)) */
    LLVMValueRef mx = sel(c, fcmp(c, LLVMRealOGT, x, cf(D, 0)), x, cf(D, 0));
    LLVMValueRef e = libm1(c, "expf", "exp", LLVMBuildFNeg(c->b, intr1(c, "llvm.fabs", x), ""));
    v = fadd_(c, fsub_(c, mx, fmul_(c, x, y)), libm1(c, "log1pf", "log1p", e));
  }
  LLVMValueRef s = reassoc(fadd_(c, l.car[0], v));
  loop_close(c, &l, &s);
  LLVMValueRef mean = fdiv_(c, l.car[0], cf(D, (double)cnt));
  store_t(c, n->dtype, c->bufp[ob], ci(c, oo), convert(c, mean, IR_F64, n->dtype));
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "loss");
}

/* ---- GEMM calls ---- */

/* The GEMMs are compiled once per process (llvm_step.c); a kernel loads the entry point
 * from the function table, bases[FUSE_BASE_FUNCS]. */
LLVMValueRef llvm_step_gemm_fn(Gen *c, bool ta, bool tb, bool bias, bool relu) {
  int i = ta | tb << 1 | bias << 2 | relu << 3;
  /* marks the variant used: llvm_step_compile has it compiled while the module is */
  c->gemm[i] = LLVMConstInt(c->i64, (unsigned long long)i, 0);
  return c->gemm[i];
}

/* ---- the 16-bit GEMM (llvm_gemm16.c): entry 16 + i of the table runs variant i ---- */

/* x holds bf16 values: cast(cast(v, bf16), f32), as the mixed modes build GEMM operands */
static bool bf16_values(const IrGraph *g, int x) {
  const IrNode *n = &g->node[x];
  return n->op == IR_CAST && n->dtype == IR_F32 && g->node[n->in[0]].dtype == IR_BF16;
}

enum { GEMM16_MIN_MN = 16, GEMM16_MIN_K = 32, GEMM16_MIN_MNK = 1 << 19 };

/* Whether the m x n x k GEMM on operands x and y runs on the 16-bit GEMM: both are bf16
 * values and the shape pays. The products are exact in f32 either way; only the summation
 * order differs. AMX works on 32 x 32 tiles of C and k in steps of 32, zero-padded, and packs
 * (and rounds) both operands per call: below these sizes the f32 GEMM is faster (measured
 * shape by shape, docs/precision.md). */
static bool gemm16_pays(const Gen *c, int x, int y, int64_t m, int64_t n, int64_t k) {
  return c->gemm16 && bf16_values(c->g, x) && bf16_values(c->g, y) && m >= GEMM16_MIN_MN &&
         n >= GEMM16_MIN_MN && k >= GEMM16_MIN_K && m * n * k >= GEMM16_MIN_MNK;
}

static LLVMValueRef gemm16_fn(Gen *c, bool ta, bool tb, bool bias, bool relu) {
  int i = 16 + (ta | tb << 1 | bias << 2 | relu << 3);
  c->gemm[i] = LLVMConstInt(c->i64, (unsigned long long)i, 0);
  return c->gemm[i];
}

/* Loads GEMM entry point i in the current function (the kernel's buffer `fb`). */
static LLVMValueRef gemm_ptr(Gen *c, int fb, LLVMValueRef i) {
  return LLVMBuildLoad2(c->b, c->ptr, gep(c, c->ptr, c->bufp[fb], i), "gemm");
}

static LLVMTypeRef gemm_args_type(Gen *c) {
  LLVMTypeRef f[] = {c->ptr, c->ptr, c->ptr, c->ptr, c->i64, c->i64, c->i64, c->i64, c->i64, c->i64,
                     c->f32, c->f32, c->ptr, c->i64, c->i64};
  return LLVMStructTypeInContext(c->cx, f, 15, 0);
}

typedef struct {
  LLVMValueRef a, b, c, bias, work; /* pointers */
  int64_t m, n, k, lda, ldb, ldc, parts_m;
  LLVMValueRef beta;                /* f32 */
} GemmCall;

static void gemm_call(Gen *c, LLVMValueRef fn, LLVMValueRef args, const GemmCall *g, LLVMValueRef part,
                      LLVMValueRef nparts) {
  LLVMTypeRef sty = gemm_args_type(c);
  LLVMValueRef v[15] = {g->a, g->b, g->c, g->bias ? g->bias : LLVMConstNull(c->ptr), ci(c, g->m), ci(c, g->n),
                        ci(c, g->k), ci(c, g->lda), ci(c, g->ldb), ci(c, g->ldc), cf(c->f32, 1), g->beta,
                        g->work, ci(c, c->p->gemm_stride), ci(c, g->parts_m)};
  for (unsigned i = 0; i < 15; i++)
    LLVMBuildStore(c->b, v[i], LLVMBuildStructGEP2(c->b, sty, args, i, ""));
  LLVMValueRef a[3] = {args, part, nparts};
  LLVMTypeRef fty = LLVMFunctionType(c->voidt, (LLVMTypeRef[]){c->ptr, c->i64, c->i64}, 3, 0);
  LLVMBuildCall2(c->b, fty, fn, a, 3, "");
}

static LLVMValueRef fptr(Gen *c, LLVMValueRef base, int64_t elems) {
  return elems ? gep(c, c->f32, base, ci(c, elems)) : base;
}
static LLVMValueRef bptr(Gen *c, LLVMValueRef base, LLVMValueRef bytes) { return gep(c, c->i8, base, bytes); }

static LLVMValueRef gen_gemm(Gen *c, int kid, char *err, size_t errlen) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  FuseGemm fg = fuse_gemm(p, kid);
  IrShape os = c->g->node[k->op].shape;
  GemmCall g = {.m = fg.m, .n = fg.n, .k = fg.k, .lda = fg.lda, .ldb = fg.ldb, .ldc = fg.ldc};
  LLVMValueRef gf = gemm16_pays(c, fg.a, fg.b, g.m, g.n, g.k) ? gemm16_fn(c, fg.ta, fg.tb, k->bias >= 0, k->relu)
                                                               : llvm_step_gemm_fn(c, fg.ta, fg.tb, k->bias >= 0, k->relu);
  if (!gf) {
    snprintf(err, errlen, "kernel %d: the GEMM generator refused its blocking", kid);
    return NULL;
  }
  int64_t aoff, boff, coff, biasoff = 0;
  int ab = value_buf(c, fg.a, &aoff), bb = value_buf(c, fg.b, &boff), cb = value_buf(c, k->result, &coff);
  int biasb = k->bias >= 0 ? value_buf(c, k->bias, &biasoff) : -1;
  int wb = kbuf(c, FUSE_BASE_ARENA, k->scratch), fb = kbuf(c, FUSE_BASE_FUNCS, 0);
  LLVMValueRef fn = body_begin(c, kid, "gemm");
  LLVMValueRef part = LLVMGetParam(fn, (unsigned)c->nbuf), nparts = LLVMGetParam(fn, (unsigned)c->nbuf + 1);
  LLVMValueRef args = LLVMBuildAlloca(c->b, gemm_args_type(c), "gemm.args");
  gf = gemm_ptr(c, fb, gf);
  g.beta = cf(c->f32, 0);
  g.bias = biasb >= 0 ? fptr(c, c->bufp[biasb], biasoff) : NULL;
  if (fg.batch == 1) {
    g.a = fptr(c, c->bufp[ab], aoff);
    g.b = fptr(c, c->bufp[bb], boff);
    g.c = fptr(c, c->bufp[cb], coff);
    g.work = c->bufp[wb];
    g.parts_m = llvm_gemm_split(c->blk, g.m, g.n, g.k, k->nparts);
    gemm_call(c, gf, args, &g, part, nparts);
  } else {
    LLVMValueRef lo, hi;
    part_range(c, fg.batch, part, nparts, &lo, &hi);
    Loop l;
    LLVMValueRef t = loop_open(c, &l, lo, hi, 0, NULL);
    LLVMValueRef o[3] = {ci(c, aoff), ci(c, boff), ci(c, coff)}, rest = t;
    for (int i = fg.nb - 1; i >= 0; i--) {
      LLVMValueRef coord = LLVMBuildSRem(c->b, rest, ci(c, os.d[i]), "");
      rest = sdiv(c, rest, ci(c, os.d[i]));
      for (int j = 0; j < 3; j++)
        if (fg.bst[j][i])
          o[j] = add(c, o[j], mul(c, coord, ci(c, fg.bst[j][i])));
    }
    g.a = gep(c, c->f32, c->bufp[ab], o[0]);
    g.b = gep(c, c->f32, c->bufp[bb], o[1]);
    g.c = gep(c, c->f32, c->bufp[cb], o[2]);
    g.work = bptr(c, c->bufp[wb], mul(c, part, ci(c, p->gemm_stride)));
    g.parts_m = 1;
    gemm_call(c, gf, args, &g, ci(c, 0), ci(c, 1));
    loop_close(c, &l, NULL);
  }
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "gemm");
}

/* ---- convolution: im2col + GEMM per image ---- */

typedef struct {
  int64_t N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, CKK, OHOW;
} ConvDims;

static ConvDims conv_dims(const IrNode *n, IrShape xs, IrShape ws) {
  ConvDims d = {.N = xs.d[0], .C = xs.d[1], .H = xs.d[2], .W = xs.d[3], .O = ws.d[0], .KH = ws.d[2],
                .KW = ws.d[3], .sh = n->a.stride[0], .sw = n->a.stride[1], .ph = n->a.pad[0],
                .pw = n->a.pad[1], .dh = n->a.dil[0], .dw = n->a.dil[1]};
  d.OH = (d.H + 2 * d.ph - d.dh * (d.KH - 1) - 1) / d.sh + 1;
  d.OW = (d.W + 2 * d.pw - d.dw * (d.KW - 1) - 1) / d.sw + 1;
  d.CKK = d.C * d.KH * d.KW;
  d.OHOW = d.OH * d.OW;
  return d;
}

static void fill(Gen *c, LLVMValueRef base, LLVMValueRef from, LLVMValueRef to, LLVMValueRef v) {
  Loop l;
  LLVMValueRef i = loop_open(c, &l, from, to, 0, NULL);
  store_t(c, IR_F32, base, i, v);
  loop_close(c, &l, NULL);
}

/* Zeroes floats [from, to) of base (to >= from). */
static void zero(Gen *c, LLVMValueRef base, LLVMValueRef from, LLVMValueRef to) {
  LLVMValueRef bytes = mul(c, LLVMBuildSub(c->b, to, from, ""), ci(c, 4));
  LLVMBuildMemSet(c->b, gep(c, c->f32, base, from), LLVMConstInt(c->i8, 0, 0), bytes, 4);
}

/* ceil(a / b) for b > 0 and a of any sign */
static LLVMValueRef ceil_div(Gen *c, LLVMValueRef a, int64_t b) {
  LLVMValueRef pos = sdiv(c, add(c, a, ci(c, b - 1)), ci(c, b));
  LLVMValueRef neg = LLVMBuildNeg(c->b, sdiv(c, LLVMBuildNeg(c->b, a, ""), ci(c, b)), "");
  return sel(c, LLVMBuildICmp(c->b, LLVMIntSGT, a, ci(c, 0), ""), pos, neg);
}

static LLVMValueRef clamp(Gen *c, LLVMValueRef x, LLVMValueRef lo, LLVMValueRef hi) {
  x = sel(c, slt(c, x, lo), lo, x);
  return sel(c, slt(c, hi, x), hi, x);
}

/* im2col (to_col) or col2im (accumulating into the image) of one image:
 * col[(c, kh, kw)][oh, ow] <-> img[c][oh*sh - ph + kh*dh][ow*sw - pw + kw*dw].
 * For each (c, kh, kw, oh) the columns ow whose input is inside the image form one range
 * [lo, hi) (computed, not tested per element): the copy between is a plain strided loop. */
static void im2col(Gen *c, const ConvDims *d, LLVMValueRef img, LLVMValueRef col, bool to_col) {
  Loop lc, lkh, lkw, lh, lw;
  /* no padding, unit stride and dilation: every row is inside and [lo, hi) = [0, OW), known
   * here, so the vectoriser sees a constant trip count and no branch */
  bool plain = d->ph == 0 && d->pw == 0 && d->sh == 1 && d->sw == 1 && d->dh == 1 && d->dw == 1;
  LLVMValueRef ch = loop_open(c, &lc, ci(c, 0), ci(c, d->C), 0, NULL);
  LLVMValueRef kh = loop_open(c, &lkh, ci(c, 0), ci(c, d->KH), 0, NULL);
  LLVMValueRef kw = loop_open(c, &lkw, ci(c, 0), ci(c, d->KW), 0, NULL);
  LLVMValueRef r = add(c, mul(c, add(c, mul(c, ch, ci(c, d->KH)), kh), ci(c, d->KW)), kw);
  LLVMValueRef shift = add(c, mul(c, kw, ci(c, d->dw)), ci(c, -d->pw)); /* iw = ow * sw + shift */
  LLVMValueRef lo = plain ? ci(c, 0) : clamp(c, ceil_div(c, LLVMBuildNeg(c->b, shift, ""), d->sw), ci(c, 0), ci(c, d->OW));
  LLVMValueRef hi = plain ? ci(c, d->OW)
                          : clamp(c, ceil_div(c, LLVMBuildSub(c->b, ci(c, d->W), shift, ""), d->sw), lo, ci(c, d->OW));
  LLVMValueRef oh = loop_open(c, &lh, ci(c, 0), ci(c, d->OH), 0, NULL);
  lh.novec = true;
  LLVMValueRef ih = add(c, mul(c, oh, ci(c, d->sh)), add(c, mul(c, kh, ci(c, d->dh)), ci(c, -d->ph)));
  LLVMValueRef crow = add(c, mul(c, r, ci(c, d->OHOW)), mul(c, oh, ci(c, d->OW)));
  LLVMBasicBlockRef bnext = block(c, "next");
  if (!plain) {
    LLVMValueRef valid = and_(c, LLVMBuildICmp(c->b, LLVMIntSGE, ih, ci(c, 0), ""), slt(c, ih, ci(c, d->H)));
    LLVMBasicBlockRef bin = block(c, "row"), bout = block(c, "pad");
    LLVMBuildCondBr(c->b, valid, bin, bout);
    at(c, bout);
    if (to_col)
      zero(c, col, crow, add(c, crow, ci(c, d->OW)));
    LLVMBuildBr(c->b, bnext);
    at(c, bin);
  }
  LLVMValueRef irow = add(c, mul(c, add(c, mul(c, ch, ci(c, d->H)), ih), ci(c, d->W)), shift);
  if (to_col && !plain) {
    zero(c, col, crow, add(c, crow, lo));
    zero(c, col, add(c, crow, hi), add(c, crow, ci(c, d->OW)));
  }
  LLVMValueRef ow = loop_open(c, &lw, lo, hi, 0, NULL);
  LLVMValueRef ii = add(c, irow, mul(c, ow, ci(c, d->sw))), cc = add(c, crow, ow);
  if (to_col)
    store_t(c, IR_F32, col, cc, load_t(c, IR_F32, img, ii));
  else
    store_t(c, IR_F32, img, ii, fadd_(c, load_t(c, IR_F32, img, ii), load_t(c, IR_F32, col, cc)));
  loop_close(c, &lw, NULL);
  LLVMBuildBr(c->b, bnext);
  at(c, bnext);
  loop_close(c, &lh, NULL);
  loop_close(c, &lkw, NULL);
  loop_close(c, &lkh, NULL);
  loop_close(c, &lc, NULL);
}

static LLVMValueRef gen_conv(Gen *c, int kid, int phase, char *err, size_t errlen) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  const IrNode *n = &c->g->node[k->op];
  int in0 = p->in[k->op][0], in1 = p->in[k->op][1];
  IrShape s0 = c->g->node[in0].shape, s1 = c->g->node[in1].shape;
  IrShape xs = n->op == IR_CONV2D_BWD_DATA ? n->shape : s0;
  IrShape ws = n->op == IR_CONV2D_BWD_FILTER ? n->shape : s1;
  ConvDims d = conv_dims(n, xs, ws);
  int64_t colb = (d.CKK * d.OHOW * 4 + 63) & ~(int64_t)63, partb = (d.O * d.CKK * 4 + 63) & ~(int64_t)63;
  int64_t per = colb + p->gemm_stride + (n->op == IR_CONV2D_BWD_FILTER ? partb : 0);
  int64_t o0, o1, oo, biasoff = 0;
  int b0 = value_buf(c, in0, &o0), b1 = value_buf(c, in1, &o1), ob = value_buf(c, k->result, &oo);
  int biasb = k->bias >= 0 ? value_buf(c, k->bias, &biasoff) : -1;
  int64_t bstride = 1;
  if (k->bias >= 0) {
    IrShape bsh = c->g->node[k->bias].shape;
    bstride = p->val[k->bias].stride[bsh.rank - 3];
  }
  int sb = kbuf(c, FUSE_BASE_ARENA, k->scratch), fb = phase == 0 ? kbuf(c, FUSE_BASE_FUNCS, 0) : -1;
  if (phase == 1) { /* gw = sum of the chunks' partial products, in chunk order */
    LLVMValueRef fn = body_begin(c, kid, "convsum");
    Loop l;
    LLVMValueRef i = loop_open(c, &l, ci(c, 0), ci(c, d.O * d.CKK), 0, NULL);
    LLVMValueRef s = cf(c->f32, 0);
    for (int ch = 0; ch < k->nparts; ch++) {
      LLVMValueRef part = bptr(c, c->bufp[sb], ci(c, ch * per + colb + p->gemm_stride));
      s = ch == 0 ? load_t(c, IR_F32, part, i) : fadd_(c, s, load_t(c, IR_F32, part, i));
    }
    store_t(c, IR_F32, c->bufp[ob], add(c, i, ci(c, oo)), s);
    loop_close(c, &l, NULL);
    LLVMBuildRetVoid(c->b);
    return wrapper(c, fn, kid, "convsum");
  }
  LLVMValueRef gf;
  /* the GEMM per image: conv2d O x OHOW x CKK, bwd_data CKK x OHOW x O, bwd_filter O x CKK x OHOW */
  bool h16 = n->op == IR_CONV2D            ? gemm16_pays(c, in0, in1, d.O, d.OHOW, d.CKK)
             : n->op == IR_CONV2D_BWD_DATA ? gemm16_pays(c, in0, in1, d.CKK, d.OHOW, d.O)
                                           : gemm16_pays(c, in0, in1, d.O, d.CKK, d.OHOW);
  LLVMValueRef (*pick)(Gen *, bool, bool, bool, bool) = h16 ? gemm16_fn : llvm_step_gemm_fn;
  if (n->op == IR_CONV2D)
    gf = pick(c, false, false, false, k->relu);
  else if (n->op == IR_CONV2D_BWD_DATA)
    gf = pick(c, true, false, false, false);
  else
    gf = pick(c, false, true, false, false);
  if (!gf) {
    snprintf(err, errlen, "kernel %d: the GEMM generator refused its blocking", kid);
    return NULL;
  }
  LLVMValueRef fn = body_begin(c, kid, "conv");
  LLVMValueRef part = LLVMGetParam(fn, (unsigned)c->nbuf), nparts = LLVMGetParam(fn, (unsigned)c->nbuf + 1);
  LLVMValueRef args = LLVMBuildAlloca(c->b, gemm_args_type(c), "gemm.args");
  gf = gemm_ptr(c, fb, gf);
  LLVMValueRef mine = bptr(c, c->bufp[sb], mul(c, part, ci(c, per)));
  LLVMValueRef col = mine, work = bptr(c, mine, ci(c, colb));
  LLVMValueRef lo, hi;
  part_range(c, d.N, part, nparts, &lo, &hi);
  Loop l;
  LLVMValueRef img = loop_open(c, &l, lo, hi, 0, NULL);
  int64_t xsz = d.C * d.H * d.W, ysz = d.O * d.OHOW;
  GemmCall g = {.work = work, .parts_m = 1, .beta = cf(c->f32, 0)};
  if (n->op == IR_CONV2D) {
    LLVMValueRef x = gep(c, c->f32, c->bufp[b0], add(c, ci(c, o0), mul(c, img, ci(c, xsz))));
    LLVMValueRef y = gep(c, c->f32, c->bufp[ob], add(c, ci(c, oo), mul(c, img, ci(c, ysz))));
    im2col(c, &d, x, col, true);
    if (biasb >= 0) { /* C starts as the bias of each output channel; beta = 1 adds the product */
      Loop lo_;
      LLVMValueRef o = loop_open(c, &lo_, ci(c, 0), ci(c, d.O), 0, NULL);
      LLVMValueRef bv = load_t(c, IR_F32, c->bufp[biasb], add(c, ci(c, biasoff), mul(c, o, ci(c, bstride))));
      LLVMValueRef row = mul(c, o, ci(c, d.OHOW));
      fill(c, y, row, add(c, row, ci(c, d.OHOW)), bv);
      loop_close(c, &lo_, NULL);
      g.beta = cf(c->f32, 1);
    }
    g.a = fptr(c, c->bufp[b1], o1), g.b = col, g.c = y;
    g.m = d.O, g.n = d.OHOW, g.k = d.CKK, g.lda = d.CKK, g.ldb = d.OHOW, g.ldc = d.OHOW;
    gemm_call(c, gf, args, &g, ci(c, 0), ci(c, 1));
  } else if (n->op == IR_CONV2D_BWD_DATA) {
    LLVMValueRef gy = gep(c, c->f32, c->bufp[b0], add(c, ci(c, o0), mul(c, img, ci(c, ysz))));
    LLVMValueRef gx = gep(c, c->f32, c->bufp[ob], add(c, ci(c, oo), mul(c, img, ci(c, xsz))));
    g.a = fptr(c, c->bufp[b1], o1), g.b = gy, g.c = col;
    g.m = d.CKK, g.n = d.OHOW, g.k = d.O, g.lda = d.CKK, g.ldb = d.OHOW, g.ldc = d.OHOW;
    gemm_call(c, gf, args, &g, ci(c, 0), ci(c, 1));
    zero(c, gx, ci(c, 0), ci(c, xsz));
    im2col(c, &d, gx, col, false);
  } else {
    LLVMValueRef x = gep(c, c->f32, c->bufp[b0], add(c, ci(c, o0), mul(c, img, ci(c, xsz))));
    LLVMValueRef gy = gep(c, c->f32, c->bufp[b1], add(c, ci(c, o1), mul(c, img, ci(c, ysz))));
    im2col(c, &d, x, col, true);
    g.a = gy, g.b = col, g.c = bptr(c, mine, ci(c, colb + p->gemm_stride));
    g.beta = sel(c, LLVMBuildICmp(c->b, LLVMIntEQ, img, lo, ""), cf(c->f32, 0), cf(c->f32, 1));
    g.m = d.O, g.n = d.CKK, g.k = d.OHOW, g.lda = d.OHOW, g.ldb = d.OHOW, g.ldc = d.CKK;
    gemm_call(c, gf, args, &g, ci(c, 0), ci(c, 1));
  }
  loop_close(c, &l, NULL);
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "conv");
}

/* ---- max pooling ---- */

/* The window's maximum at (plane base, oh, ow): value and flat index (-1: empty window);
 * the first maximum wins, NaN counts as the maximum (the interpreter's rule). */
static void pool_window(Gen *c, const IrAttr *a, int64_t H, int64_t W, LLVMValueRef X, LLVMValueRef base,
                        LLVMValueRef oh, LLVMValueRef ow, LLVMValueRef *mv, LLVMValueRef *bi, LLVMValueRef *taps) {
  bool inside = a->pad[0] == 0 && a->pad[1] == 0; /* every window lies inside the input */
  LLVMValueRef m = cf(c->f32, -INFINITY), best = ci(c, -1);
  LLVMValueRef h0 = add(c, mul(c, oh, ci(c, a->stride[0])), ci(c, -a->pad[0]));
  LLVMValueRef w0 = add(c, mul(c, ow, ci(c, a->stride[1])), ci(c, -a->pad[1]));
  for (int64_t kh = 0; kh < a->kernel[0]; kh++)
    for (int64_t kw = 0; kw < a->kernel[1]; kw++) {
      LLVMValueRef ih = add(c, h0, ci(c, kh)), iw = add(c, w0, ci(c, kw));
      LLVMValueRef valid = inside ? LLVMConstInt(c->i1, 1, 0)
                                  : and_(c, and_(c, LLVMBuildICmp(c->b, LLVMIntSGE, ih, ci(c, 0), ""), slt(c, ih, ci(c, H))),
                                         and_(c, LLVMBuildICmp(c->b, LLVMIntSGE, iw, ci(c, 0), ""), slt(c, iw, ci(c, W))));
      LLVMValueRef idx = add(c, base, add(c, mul(c, ih, ci(c, W)), iw));
      if (taps)
        taps[kh * a->kernel[1] + kw] = idx;
      LLVMValueRef xv = load_t(c, IR_F32, X, inside ? idx : sel(c, valid, idx, base));
      LLVMValueRef better = or_(c, slt(c, best, ci(c, 0)),
                                or_(c, fcmp(c, LLVMRealOGT, xv, m),
                                    and_(c, isnan_(c, xv), LLVMBuildNot(c->b, isnan_(c, m), ""))));
      LLVMValueRef take = and_(c, valid, better);
      m = sel(c, take, xv, m);
      best = sel(c, take, idx, best);
    }
  *mv = m;
  *bi = best;
}

static LLVMValueRef gen_pool(Gen *c, int kid) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  const IrNode *n = &c->g->node[k->op];
  int x = p->in[k->op][0];
  IrShape xs = c->g->node[x].shape;
  int64_t NC = xs.d[0] * xs.d[1], H = xs.d[2], W = xs.d[3];
  int64_t OH = (H + 2 * n->a.pad[0] - n->a.kernel[0]) / n->a.stride[0] + 1;
  int64_t OW = (W + 2 * n->a.pad[1] - n->a.kernel[1]) / n->a.stride[1] + 1;
  int64_t xo, oo, go = 0;
  int xb = value_buf(c, x, &xo), ob = value_buf(c, k->op, &oo);
  int gb = n->op == IR_MAX_POOL2D_BWD ? value_buf(c, p->in[k->op][1], &go) : -1;
  LLVMValueRef fn = body_begin(c, kid, "pool");
  LLVMValueRef lo, hi;
  part_range(c, NC, LLVMGetParam(fn, (unsigned)c->nbuf), LLVMGetParam(fn, (unsigned)c->nbuf + 1), &lo, &hi);
  LLVMValueRef X = fptr(c, c->bufp[xb], xo), Y = fptr(c, c->bufp[ob], oo);
  LLVMValueRef G = gb >= 0 ? fptr(c, c->bufp[gb], go) : NULL;
  Loop lp, lh, lw;
  /* windows that tile the input without overlap or padding (the usual 2x2, stride 2) */
  int nk = (int)(n->a.kernel[0] * n->a.kernel[1]);
  bool tiled = n->a.pad[0] == 0 && n->a.pad[1] == 0 && n->a.stride[0] == n->a.kernel[0] &&
               n->a.stride[1] == n->a.kernel[1] && nk <= 64;
  bool covered = tiled && OH * n->a.kernel[0] == H && OW * n->a.kernel[1] == W;
  /* the tiled backward writes rows in order: per output row, the windows' maxima go to two
   * small arrays first (their positions and gradients), then the KH input rows are written
   * left to right, every element once; storing window by window (2 floats in each of 2 rows)
   * was slower, and slower still on 2 threads */
  bool rows = G && tiled && OW <= 4096;
  LLVMValueRef bt = NULL, gvs = NULL;
  if (rows) {
    LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(fn);
    LLVMValueRef first = LLVMGetFirstInstruction(entry);
    if (first)
      LLVMPositionBuilderBefore(c->b, first);
    else
      LLVMPositionBuilderAtEnd(c->b, entry);
    bt = LLVMBuildArrayAlloca(c->b, c->i64, ci(c, OW), "best");
    gvs = LLVMBuildArrayAlloca(c->b, c->f32, ci(c, OW), "grad");
    LLVMPositionBuilderAtEnd(c->b, here);
  }
  LLVMValueRef pl = loop_open(c, &lp, lo, hi, 0, NULL);
  LLVMValueRef base = mul(c, pl, ci(c, H * W));
  if (G && !covered)
    zero(c, Y, base, add(c, base, ci(c, H * W)));
  LLVMValueRef oh = loop_open(c, &lh, ci(c, 0), ci(c, OH), 0, NULL);
  LLVMValueRef ow = loop_open(c, &lw, ci(c, 0), ci(c, OW), 0, NULL);
  LLVMValueRef m, best, taps[64];
  pool_window(c, &n->a, H, W, X, base, oh, ow, &m, &best, nk <= 64 ? taps : NULL);
  LLVMValueRef o = add(c, mul(c, add(c, mul(c, pl, ci(c, OH)), oh), ci(c, OW)), ow);
  if (!G) {
    store_t(c, IR_F32, Y, o, m);
  } else if (rows) {
    store_t(c, IR_I64, bt, ow, best);
    store_t(c, IR_F32, gvs, ow, load_t(c, IR_F32, G, o));
  } else if (tiled) { /* each input is in at most one window: write every tap once */
    LLVMValueRef gv = load_t(c, IR_F32, G, o);
    for (int t = 0; t < nk; t++)
      store_t(c, IR_F32, Y, taps[t], sel(c, LLVMBuildICmp(c->b, LLVMIntEQ, taps[t], best, ""), gv, cf(c->f32, 0)));
  } else {
    LLVMBasicBlockRef bacc = block(c, "acc"), bnext = block(c, "next");
    LLVMBuildCondBr(c->b, slt(c, best, ci(c, 0)), bnext, bacc);
    at(c, bacc);
    store_t(c, IR_F32, Y, best, fadd_(c, load_t(c, IR_F32, Y, best), load_t(c, IR_F32, G, o)));
    LLVMBuildBr(c->b, bnext);
    at(c, bnext);
  }
  loop_close(c, &lw, NULL);
  if (rows) { /* the KH input rows of this output row, in order */
    int64_t KH = n->a.kernel[0], KW = n->a.kernel[1];
    for (int64_t kh = 0; kh < KH; kh++) {
      LLVMValueRef row = add(c, base, mul(c, add(c, mul(c, oh, ci(c, KH)), ci(c, kh)), ci(c, W)));
      Loop lx;
      LLVMValueRef w = loop_open(c, &lx, ci(c, 0), ci(c, OW), 0, NULL);
      LLVMValueRef b = load_t(c, IR_I64, bt, w), gv = load_t(c, IR_F32, gvs, w);
      for (int64_t kw = 0; kw < KW; kw++) {
        LLVMValueRef idx = add(c, row, add(c, mul(c, w, ci(c, KW)), ci(c, kw)));
        store_t(c, IR_F32, Y, idx, sel(c, LLVMBuildICmp(c->b, LLVMIntEQ, idx, b, ""), gv, cf(c->f32, 0)));
      }
      loop_close(c, &lx, NULL);
    }
  }
  loop_close(c, &lh, NULL);
  loop_close(c, &lp, NULL);
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "pool");
}

/* ---- take (embedding) and take_grad: x [outer, D, inner], idx [K], y [outer, K, inner] ---- */

/* idx[i] as i64; an index outside [0, D) is reported (status) and read as 0 */
static LLVMValueRef checked_index(Gen *c, int kid, int sb, IrDtype it, LLVMValueRef ibuf, LLVMValueRef i,
                                  int64_t D) {
  LLVMValueRef t = convert(c, load_t(c, it, ibuf, i), it, IR_I64);
  LLVMValueRef bad = or_(c, slt(c, t, ci(c, 0)), LLVMBuildICmp(c->b, LLVMIntSGE, t, ci(c, D), ""));
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b), bbad = block(c, "bad"), bok = block(c, "ok");
  LLVMBuildCondBr(c->b, bad, bbad, bok);
  at(c, bbad);
  store_t(c, IR_I64, c->bufp[sb], ci(c, 0), ci(c, kid + 1));
  store_t(c, IR_I64, c->bufp[sb], ci(c, 1), t);
  store_t(c, IR_I64, c->bufp[sb], ci(c, 2), i);
  LLVMBuildBr(c->b, bok);
  at(c, bok);
  LLVMValueRef ph = LLVMBuildPhi(c->b, c->i64, "");
  LLVMValueRef vals[2] = {ci(c, 0), t};
  LLVMBasicBlockRef from[2] = {bbad, here};
  LLVMAddIncoming(ph, vals, from, 2);
  return ph;
}

static LLVMValueRef gen_take(Gen *c, int kid) {
  const FusePlan *p = c->p;
  const FuseKernel *k = &p->k[kid];
  const IrNode *n = &c->g->node[k->op];
  bool grad = n->op == IR_TAKE_GRAD;
  int src = p->in[k->op][0], ix = p->in[k->op][1];
  IrShape xs = grad ? n->shape : c->g->node[src].shape;
  int ax = n->a.axis;
  int64_t outer = 1, inner = 1, D = xs.d[ax], K = ir_numel(c->g->node[ix].shape);
  for (int i = 0; i < ax; i++)
    outer *= xs.d[i];
  for (int i = ax + 1; i < xs.rank; i++)
    inner *= xs.d[i];
  IrDtype t = n->dtype, it = c->g->node[ix].dtype;
  int64_t so, io, oo;
  int sbuf = value_buf(c, src, &so), ib = value_buf(c, ix, &io), ob = value_buf(c, k->op, &oo);
  int sb = kbuf(c, FUSE_BASE_STATUS, 0);
  LLVMValueRef fn = body_begin(c, kid, "take");
  LLVMValueRef part = LLVMGetParam(fn, (unsigned)c->nbuf), nparts = LLVMGetParam(fn, (unsigned)c->nbuf + 1);
  LLVMValueRef S = c->bufp[sbuf], I = gep(c, mem_type(c, it), c->bufp[ib], ci(c, io));
  LLVMValueRef Y = gep(c, mem_type(c, t), c->bufp[ob], ci(c, oo));
  S = gep(c, mem_type(c, t), S, ci(c, so));
  Loop lr, lj, lo, li;
  LLVMValueRef lo_, hi_;
  if (!grad) { /* each part copies whole rows of y */
    part_range(c, outer * K, part, nparts, &lo_, &hi_);
    LLVMValueRef r = loop_open(c, &lr, lo_, hi_, 0, NULL);
    LLVMValueRef o = sdiv(c, r, ci(c, K)), i = LLVMBuildSRem(c->b, r, ci(c, K), "");
    LLVMValueRef tv = checked_index(c, kid, sb, it, I, i, D);
    LLVMValueRef from = mul(c, add(c, mul(c, o, ci(c, D)), tv), ci(c, inner)), to = mul(c, r, ci(c, inner));
    LLVMValueRef j = loop_open(c, &lj, ci(c, 0), ci(c, inner), 0, NULL);
    store_t(c, t, Y, add(c, to, j), load_t(c, t, S, add(c, from, j)));
    loop_close(c, &lj, NULL);
    loop_close(c, &lr, NULL);
  } else { /* each part owns columns [lo, hi) of every row of gx: no two parts add to one place */
    part_range(c, inner, part, nparts, &lo_, &hi_);
    LLVMValueRef row = loop_open(c, &lr, ci(c, 0), ci(c, outer * D), 0, NULL);
    LLVMValueRef j = loop_open(c, &lj, lo_, hi_, 0, NULL);
    store_t(c, t, Y, add(c, mul(c, row, ci(c, inner)), j), cf(reg_type(c, t), 0));
    loop_close(c, &lj, NULL);
    loop_close(c, &lr, NULL);
    LLVMValueRef o = loop_open(c, &lo, ci(c, 0), ci(c, outer), 0, NULL);
    LLVMValueRef i = loop_open(c, &li, ci(c, 0), ci(c, K), 0, NULL);
    LLVMValueRef tv = checked_index(c, kid, sb, it, I, i, D);
    LLVMValueRef to = mul(c, add(c, mul(c, o, ci(c, D)), tv), ci(c, inner));
    LLVMValueRef from = mul(c, add(c, mul(c, o, ci(c, K)), i), ci(c, inner));
    j = loop_open(c, &lj, lo_, hi_, 0, NULL);
    LLVMValueRef at_ = add(c, to, j);
    store_t(c, t, Y, at_, fadd_(c, load_t(c, t, Y, at_), load_t(c, t, S, add(c, from, j))));
    loop_close(c, &lj, NULL);
    loop_close(c, &li, NULL);
    loop_close(c, &lo, NULL);
  }
  LLVMBuildRetVoid(c->b);
  return wrapper(c, fn, kid, "take");
}

/* ---- dispatch ---- */

LLVMValueRef llvm_step_kernel(Gen *c, int kid, int phase, char *err, size_t errlen) {
  c->nbuf = 0;
  const FuseKernel *k = &c->p->k[kid];
  switch (k->kind) {
  case FUSE_ELEMWISE: return gen_elemwise(c, kid, err, errlen);
  case FUSE_GEMM: return gen_gemm(c, kid, err, errlen);
  case FUSE_REDUCE: return gen_reduce(c, kid);
  case FUSE_SOFTMAX: case FUSE_ARGMAX: return gen_rows(c, kid);
  case FUSE_CLASS_LOSS: return gen_class_loss(c, kid);
  case FUSE_PAIR_LOSS: return gen_pair_loss(c, kid);
  case FUSE_CONV: return gen_conv(c, kid, phase, err, errlen);
  case FUSE_POOL: return gen_pool(c, kid);
  case FUSE_TAKE: return gen_take(c, kid);
  default:
    snprintf(err, errlen, "kernel %d: %s has no loop", kid, fuse_kind_name(k->kind));
    return NULL;
  }
}
