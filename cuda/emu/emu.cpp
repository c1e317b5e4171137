// The emulator's scheduler and the kernel table Rust launches through.
#include <ucontext.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#define MAMBA_EMU 1
#include "cuda_emu.h"

#include "elementwise.cu"
#include "embed.cu"
#include "matvec.cu"
#include "mma.cu"
#include "norm.cu"
#include "quantize.cu"
#include "ssm.cu"

// Switching between a block's fibers. glibc's swapcontext saves and restores
// the signal mask with a system call at every switch, and a decode step of a
// small model makes millions of switches (every barrier and shuffle): on
// x86-64 the switch is instead a few instructions (emu_switch, below) that
// save what the SysV ABI says a callee must keep (rbx, rbp, r12-r15, the
// stack pointer, MXCSR and the x87 control word). Elsewhere, ucontext.
#if defined(__x86_64__) && !defined(MAMBA_EMU_UCONTEXT)
#define EMU_FAST_SWITCH 1
// Saves the callee-saved state on the current stack, stores the stack
// pointer in *from, and resumes the fiber whose stack pointer is `to`.
extern "C" void mamba_emu_switch(void** from, void* to);
asm(R"(
    .text
    .p2align 4
    .globl mamba_emu_switch
    .type mamba_emu_switch, @function
mamba_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mamba_emu_switch, .-mamba_emu_switch
)");
#endif

namespace emu {

enum State { RUNNABLE, AT_SYNCTHREADS, AT_WARP, DONE };

struct Thread {
#ifdef EMU_FAST_SWITCH
    void* sp;  // saved stack pointer while switched out
#else
    ucontext_t ctx;
#endif
    dim3 tid;
    int lane, warp;
    State st;
    unsigned mask;
    int phase;
};

struct Block {
    dim3 bid, bdim, gdim;
    std::vector<Thread> threads;
    std::vector<char> stacks;
    std::vector<uint64_t> xbuf;  // [warp][2][32]
    std::vector<uint8_t> gbuf;   // [warp][2][32][64]: warp_gather
#ifdef EMU_FAST_SWITCH
    void* sched_sp;
#else
    ucontext_t sched;
#endif
    void (*fn)(const void*);
    const void* params;
    std::string error;
};

thread_local Thread* cur_thread;
thread_local Block* cur_block;

const dim3& thread_idx() { return cur_thread->tid; }
const dim3& block_idx() { return cur_block->bid; }
const dim3& block_dim() { return cur_block->bdim; }
const dim3& grid_dim() { return cur_block->gdim; }
int lane_id() { return cur_thread->lane; }

static void yield_to_scheduler() {
#ifdef EMU_FAST_SWITCH
    mamba_emu_switch(&cur_thread->sp, cur_block->sched_sp);
#else
    swapcontext(&cur_thread->ctx, &cur_block->sched);
#endif
}

void fault(const char* what) {
    Block* b = cur_block;
    if (b->error.empty()) {
        char m[160];
        snprintf(m, sizeof m, "%s in block (%u,%u,%u), thread %u", what, b->bid.x, b->bid.y, b->bid.z,
                 cur_thread->tid.x);
        b->error = m;
    }
}

void syncthreads() {
    cur_thread->st = AT_SYNCTHREADS;
    yield_to_scheduler();
}

uint64_t warp_exchange(unsigned mask, uint64_t v, int src) {
    Thread* t = cur_thread;
    Block* b = cur_block;
    if (!(mask >> t->lane & 1u) || !(mask >> (src & 31) & 1u) || src < 0 || src > 31) {
        char m[160];
        snprintf(m, sizeof m, "warp shuffle: lane %d (mask %08x) reads lane %d outside the mask", t->lane, mask, src);
        if (b->error.empty()) b->error = m;
    }
    uint64_t* slot = &b->xbuf[((size_t)t->warp * 2 + t->phase) * 32];
    slot[t->lane] = v;
    t->mask = mask;
    t->st = AT_WARP;
    yield_to_scheduler();
    uint64_t r = slot[src & 31];
    t->phase ^= 1;
    return r;
}

void warp_gather(unsigned mask, const void* v, size_t n, void* all) {
    Thread* t = cur_thread;
    Block* b = cur_block;
    if (n > 64 || !(mask >> t->lane & 1u)) {
        if (b->error.empty()) b->error = "warp gather: more than 64 bytes, or a lane outside its own mask";
        n = n > 64 ? 64 : n;
    }
    uint8_t* slot = &b->gbuf[((size_t)t->warp * 2 + t->phase) * 32 * 64];
    memcpy(slot + (size_t)t->lane * 64, v, n);
    t->mask = mask;
    t->st = AT_WARP;
    yield_to_scheduler();
    for (int l = 0; l < 32; l++) {
        if (mask >> l & 1u) memcpy((uint8_t*)all + (size_t)l * n, slot + (size_t)l * 64, n);
        else memset((uint8_t*)all + (size_t)l * n, 0, n);
    }
    t->phase ^= 1;
}

static void entry() {
    cur_block->fn(cur_block->params);
    cur_thread->st = DONE;
#ifdef EMU_FAST_SWITCH
    // A finished fiber is never resumed: back to the scheduler for good.
    mamba_emu_switch(&cur_thread->sp, cur_block->sched_sp);
    abort();
#endif
}

#ifdef EMU_FAST_SWITCH
// A new fiber's stack, from its top down, as mamba_emu_switch leaves a
// switched-out one: a return address (entry, reached by the switch's ret
// with the stack as a call would leave it: 16-byte aligned before the call),
// six zeroed callee-saved registers, then MXCSR and the x87 control word at
// their power-on defaults. Returns the stack pointer to resume it with.
static void* fiber_stack(char* base, size_t size) {
    uintptr_t top = ((uintptr_t)(base + size)) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)top;
    *--sp = 0;                         // entry's own (never used) return address
    *--sp = (uint64_t)(uintptr_t)&entry;  // the switch's ret goes here
    for (int i = 0; i < 6; i++) *--sp = 0;  // rbp, rbx, r12-r15
    *--sp = 0x037f00001f80ull;         // MXCSR 0x1f80 (low word), FPU CW 0x037f
    return sp;
}
#endif

static const size_t STACK = 64 * 1024;

// Runs one block to completion; false with b.error set on a barrier fault.
static bool run_block(Block& b) {
    size_t nt = (size_t)b.bdim.x * b.bdim.y * b.bdim.z;
    size_t nw = (nt + 31) / 32;
    b.threads.assign(nt, Thread{});
    if (b.stacks.size() < nt * STACK) b.stacks.resize(nt * STACK);
    b.xbuf.assign(nw * 64, 0);
    if (b.gbuf.size() < nw * 2 * 32 * 64) b.gbuf.resize(nw * 2 * 32 * 64);
    for (size_t i = 0; i < nt; i++) {
        Thread& t = b.threads[i];
        t.tid = dim3{(unsigned)(i % b.bdim.x), (unsigned)(i / b.bdim.x % b.bdim.y), (unsigned)(i / ((size_t)b.bdim.x * b.bdim.y))};
        t.lane = (int)(i % 32);
        t.warp = (int)(i / 32);
        t.st = RUNNABLE;
        t.phase = 0;
#ifdef EMU_FAST_SWITCH
        t.sp = fiber_stack(&b.stacks[i * STACK], STACK);
#else
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = &b.stacks[i * STACK];
        t.ctx.uc_stack.ss_size = STACK;
        t.ctx.uc_link = &b.sched;
        makecontext(&t.ctx, entry, 0);
#endif
    }
    cur_block = &b;
    for (;;) {
        for (size_t i = 0; i < nt; i++) {
            if (b.threads[i].st != RUNNABLE) continue;
            cur_thread = &b.threads[i];
#ifdef EMU_FAST_SWITCH
            mamba_emu_switch(&b.sched_sp, cur_thread->sp);
#else
            swapcontext(&b.sched, &cur_thread->ctx);
#endif
            if (!b.error.empty()) return false;
        }
        size_t done = 0, at_sync = 0, at_warp = 0;
        for (auto& t : b.threads) {
            done += t.st == DONE;
            at_sync += t.st == AT_SYNCTHREADS;
            at_warp += t.st == AT_WARP;
        }
        if (done == nt) return true;
        bool released = false;
        // A warp shuffle completes when every lane of its mask waits on one with that mask.
        for (size_t w = 0; w < nw; w++) {
            for (size_t l = 0; l < 32 && w * 32 + l < nt; l++) {
                Thread& t = b.threads[w * 32 + l];
                if (t.st != AT_WARP) continue;
                bool all = true;
                for (int k = 0; k < 32; k++) {
                    if (!(t.mask >> k & 1u)) continue;
                    size_t j = w * 32 + k;
                    if (j >= nt || b.threads[j].st != AT_WARP || b.threads[j].mask != t.mask) all = false;
                }
                if (all) {
                    for (int k = 0; k < 32; k++)
                        if (t.mask >> k & 1u) b.threads[w * 32 + k].st = RUNNABLE;
                    released = true;
                }
            }
        }
        if (released) continue;
        if (at_sync == nt) {
            for (auto& t : b.threads) t.st = RUNNABLE;
            continue;
        }
        char m[200];
        if (at_sync > 0)
            snprintf(m, sizeof m, "divergent __syncthreads in block (%u,%u,%u): %zu of %zu threads reached it, %zu exited, %zu wait on a warp shuffle",
                     b.bid.x, b.bid.y, b.bid.z, at_sync, nt, done, at_warp);
        else
            snprintf(m, sizeof m, "warp shuffle deadlock in block (%u,%u,%u): %zu threads wait on a shuffle whose mask names exited lanes",
                     b.bid.x, b.bid.y, b.bid.z, at_warp);
        b.error = m;
        return false;
    }
}

}  // namespace emu

// Deliberately wrong kernels, only in the emulator, proving it reports the
// faults it claims to detect (tests/emu_kernels.rs).
struct SelftestArgs {
    int* out;
};
static void emu_selftest_divergent_sync(const SelftestArgs a) {
    if (threadIdx.x < 16) __syncthreads();
    a.out[threadIdx.x] = 1;
}
static void emu_selftest_shuffle_exited_lane(const SelftestArgs a) {
    if (threadIdx.x == 3) return;
    a.out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, (int)threadIdx.x, 1);
}

static void emu_selftest_misaligned_load(const SelftestArgs a) {
    U4 v = ld_u4((const u8*)a.out + 4);
    a.out[threadIdx.x] = (int)v.x;
}

struct Entry {
    const char* name;
    size_t params;
    void (*fn)(const void*);
};

#define REG(k, P) {#k, sizeof(P), [](const void* p) { k(*(const P*)p); }},
#define REG_MV1(name, NC) REG(matvec_##name##_##NC, MatvecArgs)
#define REG_MV(name) REG_MV1(name, 1) REG_MV1(name, 2) REG_MV1(name, 3) REG_MV1(name, 4) REG_MV1(name, 5) REG_MV1(name, 6) REG_MV1(name, 7) REG_MV1(name, 8) REG(matmul_##name, MatmulArgs) \
    REG(matvec_##name##_n3_1, MatvecTArgs) REG(matvec_##name##_n3_2, MatvecTArgs)

#define REG_MVF1(name, NC) REG(matvec_##name##_##NC, MatvecFArgs)
#define REG_MVF(name) REG_MVF1(name, 1) REG_MVF1(name, 2) REG_MVF1(name, 3) REG_MVF1(name, 4) REG_MVF1(name, 5) REG_MVF1(name, 6) REG_MVF1(name, 7) REG_MVF1(name, 8)

static const Entry TABLE[] = {
    REG(emu_selftest_divergent_sync, SelftestArgs)
    REG(emu_selftest_shuffle_exited_lane, SelftestArgs)
    REG(emu_selftest_misaligned_load, SelftestArgs)
    REG(rms_norm, RmsNormArgs)
    REG(rms_norm_q8a, RmsNormQ8aArgs)
    REG(rms_norm3, RmsNorm3Args)
    REG(add_f32, AddArgs)
    REG(copy_rows_f32, CopyRowsArgs)
    REG(argmax_f32, ArgmaxArgs)
    REG(topk_f32, TopkArgs)
    REG(quantize_q8a, QuantizeArgs)
    REG(conv1d_silu_k4, ConvArgs)
    REG(selective_scan_n16, ScanArgs)
    REG(embed_rows, EmbedArgs)
    REG_MVF(f32) REG_MVF(f16) REG_MVF(bf16)
    REG_MV(q4_0) REG_MV(q4_1) REG_MV(q5_0) REG_MV(q5_1) REG_MV(q8_0) REG_MV(q4_k) REG_MV(q5_k) REG_MV(q6_k)
    REG_MV(q2_k) REG_MV(q3_k) REG_MV(iq1_s) REG_MV(iq1_m) REG_MV(iq2_xxs) REG_MV(iq2_xs) REG_MV(iq2_s)
    REG_MV(tq1_0) REG_MV(tq2_0)
    REG_MV(iq3_xxs) REG_MV(iq3_s) REG_MV(iq4_nl) REG_MV(iq4_xs)
    REG(mma_probe_s8, MmaProbeArgs) REG(mma_matmul_q8_0_badlayout, MmaArgs)
    REG(mma_matmul_q4_0, MmaArgs) REG(mma_matmul_q4_1, MmaArgs) REG(mma_matmul_q5_0, MmaArgs)
    REG(mma_matmul_q5_1, MmaArgs) REG(mma_matmul_q8_0, MmaArgs) REG(mma_matmul_q4_k, MmaArgs)
    REG(mma_matmul_q5_k, MmaArgs) REG(mma_matmul_q6_k, MmaArgs) REG(mma_matmul_q2_k, MmaArgs)
    REG(mma_matmul_q3_k, MmaArgs) REG(mma_matmul_iq2_xxs, MmaArgs) REG(mma_matmul_iq2_xs, MmaArgs)
    REG(mma_matmul_iq2_s, MmaArgs) REG(mma_matmul_tq2_0, MmaArgs) REG(mma_matmul_tq1_0, MmaArgs)
    REG(mma_matmul_iq1_s, MmaArgs) REG(mma_matmul_iq1_m, MmaArgs) REG(mma_matmul_iq3_xxs, MmaArgs)
    REG(mma_matmul_iq3_s, MmaArgs) REG(mma_matmul_iq4_nl, MmaArgs) REG(mma_matmul_iq4_xs, MmaArgs)
};

struct EmuDim {
    unsigned x, y, z;
};

// 0 on success; otherwise an error message is written into err.
extern "C" int mamba_emu_launch(const char* name, EmuDim grid, EmuDim block, unsigned shared_bytes,
                                const void* params, size_t params_size, char* err, size_t err_len) {
    auto fail = [&](const std::string& m) {
        snprintf(err, err_len, "%s", m.c_str());
        return 1;
    };
    const Entry* e = nullptr;
    for (const Entry& t : TABLE)
        if (strcmp(t.name, name) == 0) e = &t;
    if (!e) return fail(std::string("no kernel named ") + name);
    if (e->params != params_size)
        return fail(std::string("parameter block size mismatch for ") + name + ": kernel " + std::to_string(e->params) +
                    ", host " + std::to_string(params_size));
    if (shared_bytes != 0) return fail("dynamic shared memory is not used by these kernels");
    size_t nt = (size_t)block.x * block.y * block.z;
    // The hardware's limits (every GPU since compute capability 3.0), so a
    // shape that would fail with CUDA_ERROR_INVALID_VALUE on a device fails
    // here too.
    if (nt == 0 || nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0 || grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
        return fail("invalid launch configuration (grid " + std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" +
                    std::to_string(grid.z) + ", block " + std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
                    std::to_string(block.z) + ")");
    size_t nblocks = (size_t)grid.x * grid.y * grid.z;
    unsigned hw = std::thread::hardware_concurrency();
    size_t workers = std::min<size_t>(nblocks, hw == 0 ? 2 : std::min(hw, 4u));
    std::atomic<size_t> next{0};
    std::mutex mu;
    std::string first_error;
    auto work = [&]() {
        emu::Block b;
        b.bdim = dim3{block.x, block.y, block.z};
        b.gdim = dim3{grid.x, grid.y, grid.z};
        b.fn = e->fn;
        b.params = params;
        for (;;) {
            size_t i = next.fetch_add(1);
            if (i >= nblocks) return;
            b.bid = dim3{(unsigned)(i % grid.x), (unsigned)(i / grid.x % grid.y), (unsigned)(i / ((size_t)grid.x * grid.y))};
            b.error.clear();
            if (!emu::run_block(b)) {
                std::lock_guard<std::mutex> g(mu);
                if (first_error.empty()) first_error = std::string(name) + ": " + b.error;
                next.store(nblocks);
                return;
            }
        }
    };
    std::vector<std::thread> pool;
    for (size_t i = 1; i < workers; i++) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (!first_error.empty()) return fail(first_error);
    return 0;
}
