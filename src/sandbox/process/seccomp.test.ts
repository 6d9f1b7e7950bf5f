// The seccomp program run through a small classic-BPF interpreter (the kernel's verdicts inside a real
// sandbox are asserted by the driver conformance suite: the "seccomp" case).
import { test } from "node:test";
import assert from "node:assert/strict";
import { AUDIT_ARCH_X86_64, DENIED_SYSCALLS, SECCOMP_RET, X32_SYSCALL_BIT, buildSeccompFilter, encodeSeccompFilter, x86_64SyscallNumber, type SockFilter } from "./seccomp";

/** Runs a seccomp program on one struct seccomp_data (only the fields the program may read). */
function runFilter(program: readonly SockFilter[], data: { nr: number; arch?: number; arg0?: number }): number {
  const mem = Buffer.alloc(64);
  mem.writeUInt32LE(data.nr >>> 0, 0);
  mem.writeUInt32LE((data.arch ?? AUDIT_ARCH_X86_64) >>> 0, 4);
  mem.writeBigUInt64LE(BigInt(data.arg0 ?? 0), 16);
  let a = 0;
  for (let pc = 0, steps = 0; pc < program.length && steps < 10_000; steps++) {
    const i = program[pc]!;
    switch (i.code) {
      case 0x20: a = mem.readUInt32LE(i.k); pc++; break;
      case 0x15: pc += 1 + (a === i.k ? i.jt : i.jf); break;
      case 0x35: pc += 1 + (a >= i.k ? i.jt : i.jf); break;
      case 0x45: pc += 1 + ((a & i.k) !== 0 ? i.jt : i.jf); break;
      case 0x06: return i.k;
      default: throw new Error(`unknown opcode ${i.code}`);
    }
  }
  throw new Error("the program fell off its end");
}

const program = buildSeccompFilter("x64");
const nr = (name: string): number => {
  const n = x86_64SyscallNumber(name);
  if (n === undefined) throw new Error(name);
  return n;
};
const EPERM = SECCOMP_RET.ERRNO | 1;
const ENOSYS = SECCOMP_RET.ERRNO | 38;
const ALLOW = SECCOMP_RET.ALLOW;
const CLONE_THREAD_FLAGS = 0x3d0f00; // glibc's pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
const CLONE_NEWUSER = 0x10000000;

test("every denied syscall gets EPERM", () => {
  for (const name of DENIED_SYSCALLS) assert.equal(runFilter(program, { nr: nr(name) }), EPERM, name);
  // The minimum issue 12 asks for (unshare and clone are argument-checked, below).
  const required = ["keyctl", "add_key", "request_key", "bpf", "perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "setns", "mount", "umount2", "pivot_root", "move_mount", "fsopen", "fsmount", "open_tree", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "userfaultfd"];
  for (const name of required) assert.ok((DENIED_SYSCALLS as readonly string[]).includes(name), name);
});

test("ordinary syscalls are allowed", () => {
  for (const n of [0, 1, 2, 3, 9, 57, 59, 61, 202, 231, 232, 257, 262, 318, 334, 435 - 1]) assert.equal(runFilter(program, { nr: n }), ALLOW, `nr ${n}`);
});

test("namespaces: clone and unshare with CLONE_NEW* refused, threads and plain forks allowed, clone3 ENOSYS", () => {
  const table: Array<[string, number, number]> = [
    ["clone", CLONE_THREAD_FLAGS, ALLOW],
    ["clone", 0x01200011, ALLOW], // fork(): CHILD_SETTID|CHILD_CLEARTID|SIGCHLD
    ["clone", CLONE_NEWUSER | 17, EPERM],
    ["clone", 0x20000000 | 17, EPERM], // CLONE_NEWPID
    ["clone", 0x40000000, EPERM], // CLONE_NEWNET
    ["clone", 0x20000, EPERM], // CLONE_NEWNS
    ["unshare", CLONE_NEWUSER, EPERM],
    ["unshare", 0x80, EPERM], // CLONE_NEWTIME
    ["unshare", 0x02000000, EPERM], // CLONE_NEWCGROUP
    ["unshare", 0x400, ALLOW], // CLONE_FILES
    ["clone3", 0, ENOSYS],
  ];
  for (const [name, arg0, want] of table) assert.equal(runFilter(program, { nr: nr(name), arg0 }), want, `${name}(0x${arg0.toString(16)})`);
});

test("personality and socket: argument checks", () => {
  for (const v of [0, 8, 0x20000, 0x20008, 0xffffffff]) assert.equal(runFilter(program, { nr: nr("personality"), arg0: v }), ALLOW, `personality 0x${v.toString(16)}`);
  for (const v of [0x0040000 /* ADDR_NO_RANDOMIZE */, 0x400000 /* READ_IMPLIES_EXEC */]) assert.equal(runFilter(program, { nr: nr("personality"), arg0: v }), EPERM);
  for (const fam of [1, 2, 10, 16, 17]) assert.equal(runFilter(program, { nr: nr("socket"), arg0: fam }), ALLOW, `socket family ${fam}`);
  for (const fam of [38, 40]) assert.equal(runFilter(program, { nr: nr("socket"), arg0: fam }), EPERM, `socket family ${fam}`);
});

test("other ABIs: a foreign arch kills, x32 gets EPERM", () => {
  assert.equal(runFilter(program, { nr: 0, arch: 0x40000003 /* AUDIT_ARCH_I386 */ }), SECCOMP_RET.KILL_PROCESS);
  assert.equal(runFilter(program, { nr: X32_SYSCALL_BIT | 0 }), EPERM);
  assert.equal(runFilter(program, { nr: X32_SYSCALL_BIT | 1 /* write */ }), EPERM);
});

test("unknown architectures are refused, and the encoding is sock_filter[]", () => {
  assert.throws(() => buildSeccompFilter("arm64"), /only x64/);
  const bytes = encodeSeccompFilter(program);
  assert.equal(bytes.length, program.length * 8);
  assert.equal(bytes.readUInt16LE(0), 0x20);
  assert.equal(bytes.readUInt32LE(4), 4);
  assert.equal(bytes.readUInt32LE(bytes.length - 4), ALLOW);
});
