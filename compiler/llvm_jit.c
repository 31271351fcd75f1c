// llvm_jit.c — a small wrapper around LLVM 19's ORC LLJIT for the host CPU.
// The whole-step compiler and the GEMM generator use it the same way:
// new module -> build IR -> optimize -> add -> lookup.
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "llvm.h"

struct LlvmJit {
    LlvmHost host;
    LLVMTargetMachineRef tm;       // for passes and object emission
    LLVMOrcThreadSafeContextRef tsc;
    LLVMOrcLLJITRef lljit;
    char err[1024];
};

static void set_err(char *buf, size_t len, const char *fmt, ...) {
    if (!buf || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

// Consumes an LLVMErrorRef into the JIT's message; returns true if it was an error.
static bool take_error(LlvmJit *jit, LLVMErrorRef e, const char *what) {
    if (!e)
        return false;
    char *msg = LLVMGetErrorMessage(e);
    set_err(jit->err, sizeof jit->err, "%s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return true;
}

static bool has_feature(const char *features, const char *name) {
    size_t n = strlen(name);
    for (const char *p = features; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n + 1 && p[0] == '+' && memcmp(p + 1, name, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

void llvm_host_from_features(LlvmHost *h, const char *cpu, const char *features) {
    snprintf(h->cpu, sizeof h->cpu, "%s", cpu ? cpu : "generic");
    h->fma = has_feature(features, "fma");
    h->avx2 = has_feature(features, "avx2");
    h->avx512f = has_feature(features, "avx512f");
    h->avx512bf16 = has_feature(features, "avx512bf16");
    // The GEMM's masked loads and stores want AVX-512F; 256-bit code wants AVX2+FMA.
    if (h->avx512f && h->fma) {
        h->isa = LLVM_ISA_AVX512;
        h->vec_bits = 512;
    } else if (h->avx2 && h->fma) {
        h->isa = LLVM_ISA_AVX2;
        h->vec_bits = 256;
    } else {
        h->isa = LLVM_ISA_GENERIC;
        h->vec_bits = 128;
    }
}

static LLVMTargetMachineRef make_tm(LlvmJit *jit) {
    LLVMTargetRef target;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(jit->host.triple, &target, &msg)) {
        set_err(jit->err, sizeof jit->err, "no LLVM target for %s: %s", jit->host.triple, msg);
        LLVMDisposeMessage(msg);
        return NULL;
    }
    // PIC so that emitted objects also link into PIE executables (ltlc build).
    return LLVMCreateTargetMachine(target, jit->host.triple, jit->host.cpu, jit->host.features,
                                   LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                   LLVMCodeModelJITDefault);
}

// `ltlc build --cpu=`: a target other than the host for every JIT created afterwards (its
// objects go into a program for other machines). The levels are LLVM's x86-64 psABI levels.
static const char *target_cpu, *target_features;

bool llvm_jit_set_target(const char *name) {
    static const char *const levels[][2] = {
        {"generic", ""},
        {"x86-64-v3", "+avx,+avx2,+bmi,+bmi2,+cx16,+f16c,+fma,+lzcnt,+movbe,+popcnt,+sahf,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave"},
        {"x86-64-v4", "+avx,+avx2,+bmi,+bmi2,+cx16,+f16c,+fma,+lzcnt,+movbe,+popcnt,+sahf,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,"
                      "+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl"},
    };
    if (!strcmp(name, "native")) {
        target_cpu = target_features = NULL;
        return true;
    }
    for (size_t i = 0; i < sizeof levels / sizeof *levels; i++)
        if (!strcmp(name, levels[i][0])) {
            target_cpu = i ? levels[i][0] : "x86-64";
            target_features = levels[i][1];
            return true;
        }
    return false;
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool init_ok;

static void init_native(void) {
    init_ok = !LLVMInitializeNativeTarget() && !LLVMInitializeNativeAsmPrinter() &&
              !LLVMInitializeNativeAsmParser();
}

LlvmJit *llvm_jit_create(char *err, size_t errlen) {
    pthread_once(&init_once, init_native);
    if (!init_ok) {
        set_err(err, errlen, "LLVM: cannot initialise the native target");
        return NULL;
    }
    LlvmJit *jit = calloc(1, sizeof *jit);
    if (!jit) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    char *triple = LLVMGetDefaultTargetTriple();
    char *cpu = LLVMGetHostCPUName();
    char *features = LLVMGetHostCPUFeatures();
    snprintf(jit->host.triple, sizeof jit->host.triple, "%s", triple);
    llvm_host_from_features(&jit->host, target_cpu ? target_cpu : cpu, target_cpu ? target_features : features);
    jit->host.features = strdup(target_cpu ? target_features : features ? features : "");
    LLVMDisposeMessage(triple);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(features);

    jit->tm = make_tm(jit);
    LLVMTargetMachineRef jit_tm = jit->tm ? make_tm(jit) : NULL;   // consumed by the builder
    if (!jit_tm) {
        set_err(err, errlen, "%s", jit->err[0] ? jit->err : "LLVM: cannot create a target machine");
        llvm_jit_destroy(jit);
        return NULL;
    }
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
        builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jit_tm));
    if (take_error(jit, LLVMOrcCreateLLJIT(&jit->lljit, builder), "LLJIT")) {
        set_err(err, errlen, "%s", jit->err);
        llvm_jit_destroy(jit);
        return NULL;
    }
    // Let JIT code call libc, libm and the runtime (rt_*) linked into this process.
    LLVMOrcDefinitionGeneratorRef gen;
    if (take_error(jit, LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                            &gen, LLVMOrcLLJITGetGlobalPrefix(jit->lljit), NULL, NULL),
                   "LLJIT process symbols")) {
        set_err(err, errlen, "%s", jit->err);
        llvm_jit_destroy(jit);
        return NULL;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit->lljit), gen);
    jit->tsc = LLVMOrcCreateNewThreadSafeContext();
    return jit;
}

void llvm_jit_destroy(LlvmJit *jit) {
    if (!jit)
        return;
    if (jit->lljit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(jit->lljit);
        if (e)
            LLVMConsumeError(e);
    }
    if (jit->tsc)
        LLVMOrcDisposeThreadSafeContext(jit->tsc);
    if (jit->tm)
        LLVMDisposeTargetMachine(jit->tm);
    free(jit->host.features);
    free(jit);
}

const char *llvm_jit_error(const LlvmJit *jit) { return jit->err; }
const LlvmHost *llvm_jit_host(const LlvmJit *jit) { return &jit->host; }
LLVMContextRef llvm_jit_context(LlvmJit *jit) { return LLVMOrcThreadSafeContextGetContext(jit->tsc); }
LLVMTargetMachineRef llvm_jit_target_machine(LlvmJit *jit) { return jit->tm; }

LLVMModuleRef llvm_jit_new_module(LlvmJit *jit, const char *name) {
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(name, llvm_jit_context(jit));
    LLVMSetTarget(mod, jit->host.triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(jit->tm);
    LLVMSetModuleDataLayout(mod, dl);
    LLVMDisposeTargetData(dl);
    return mod;
}

bool llvm_jit_optimize(LlvmJit *jit, LLVMModuleRef mod, const char *passes) {
    char *msg = NULL;
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
        set_err(jit->err, sizeof jit->err, "invalid LLVM IR: %s", msg);
        LLVMDisposeMessage(msg);
        return false;
    }
    LLVMDisposeMessage(msg);
    // The host TM matters: without it the vectorisers see no vector registers.
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(mod, passes ? passes : "default<O3>", jit->tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    return !take_error(jit, e, "LLVM passes");
}

bool llvm_jit_add_module(LlvmJit *jit, LLVMModuleRef mod) {
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, jit->tsc);
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit->lljit);
    LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(jit->lljit, jd, tsm);
    if (e) {
        LLVMOrcDisposeThreadSafeModule(tsm);   // ownership was not taken
        return !take_error(jit, e, "LLJIT add module");
    }
    return true;
}

bool llvm_jit_add_object(LlvmJit *jit, const void *obj, size_t len) {
    LLVMMemoryBufferRef buf =
        LLVMCreateMemoryBufferWithMemoryRangeCopy(obj, len, "ltl-cached-object");
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit->lljit);
    return !take_error(jit, LLVMOrcLLJITAddObjectFile(jit->lljit, jd, buf), "LLJIT add object");
}

void *llvm_jit_lookup(LlvmJit *jit, const char *name) {
    LLVMOrcExecutorAddress addr = 0;
    if (take_error(jit, LLVMOrcLLJITLookup(jit->lljit, &addr, name), "LLJIT lookup"))
        return NULL;
    return (void *)(uintptr_t)addr;
}

bool llvm_jit_emit_object(LlvmJit *jit, LLVMModuleRef mod, void **obj, size_t *len) {
    char *msg = NULL;
    LLVMMemoryBufferRef buf = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(jit->tm, mod, LLVMObjectFile, &msg, &buf)) {
        set_err(jit->err, sizeof jit->err, "LLVM object emission: %s", msg ? msg : "?");
        LLVMDisposeMessage(msg);
        return false;
    }
    *len = LLVMGetBufferSize(buf);
    *obj = malloc(*len ? *len : 1);
    if (*obj)
        memcpy(*obj, LLVMGetBufferStart(buf), *len);
    LLVMDisposeMemoryBuffer(buf);
    if (!*obj) {
        set_err(jit->err, sizeof jit->err, "out of memory");
        return false;
    }
    return true;
}

char *llvm_print_module(LLVMModuleRef mod) {
    char *s = LLVMPrintModuleToString(mod);
    char *copy = strdup(s);
    LLVMDisposeMessage(s);
    return copy;
}

LLVMValueRef llvm_intrinsic(LLVMModuleRef mod, const char *name, LLVMTypeRef *types, size_t ntypes) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    return id ? LLVMGetIntrinsicDeclaration(mod, id, types, ntypes) : NULL;
}

void llvm_jit_set_error(LlvmJit *jit, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(jit->err, sizeof jit->err, fmt, ap);
    va_end(ap);
}
