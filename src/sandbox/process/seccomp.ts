/**
 * The seccomp filter of the process driver's sandboxes: a classic-BPF program (`struct sock_filter[]`,
 * 8 bytes per instruction, host byte order) that bubblewrap loads with `--seccomp FD` right before it
 * execs the sandbox's first process, so every process and thread of the sandbox inherits it.
 *
 * Why generated here rather than compiled with libseccomp: there is no maintained Node binding, and a
 * build-time C step would need gcc and libseccomp-dev on every node (the mount helper avoids a compiler
 * for the same reason). The program is small, fixed and unit-tested with a BPF interpreter
 * (seccomp.test.ts), and the real kernel's verdicts are asserted from inside a sandbox (conformance).
 *
 * Policy: default allow, with a deny list. A function is arbitrary Node code (native addons included)
 * and an allow list that is too tight fails in production in ways a deny list does not; the deny list
 * covers everything Docker's default profile (moby/profiles seccomp/default.json) refuses to a
 * container without the matching capability, plus `ptrace`/`process_vm_*` (Docker allows them on
 * kernels ≥ 4.8; a function has no reason to trace anything) and io_uring (Docker denies it too).
 * - Architecture: only x86_64 is built (the only one tested here); any other audit arch in a syscall
 *   (e.g. the i386 ABI through `int 0x80`) kills the process, and the x32 ABI (nr with bit 30) gets EPERM.
 *   `buildSeccompFilter` throws on another host architecture, so the driver refuses to start instances
 *   unfiltered rather than run them unfiltered.
 * - User and other namespaces: `unshare` and `clone` with any CLONE_NEW* flag get EPERM, `setns`
 *   always; `clone3` gets ENOSYS (its flags live in memory BPF cannot read), so glibc falls back to
 *   `clone`, which is checked. This is what bubblewrap's `--disable-userns` would give, which needs
 *   `--unshare-user` and so does not fit our root bwrap + setpriv layout (see bwrap-args.ts).
 * - `personality` only with the values Docker allows (Node never calls it).
 * - `socket` refuses AF_ALG and AF_VSOCK, as Docker does.
 *
 * Cost: filters whose verdict for a syscall number does not depend on its arguments are cached by the
 * kernel (≥ 5.11: the seccomp action cache), so only clone/unshare/personality/socket run the program.
 */

/** Syscall numbers of x86_64 (asm/unistd_64.h) that the filter mentions. */
const X86_64: Readonly<Record<string, number>> = {
  socket: 41, clone: 56, ptrace: 101, syslog: 103, personality: 135, uselib: 134, ustat: 136, sysfs: 139,
  pivot_root: 155, _sysctl: 156, acct: 163, settimeofday: 164, mount: 165, umount2: 166,
  swapon: 167, swapoff: 168, reboot: 169, sethostname: 170, setdomainname: 171, iopl: 172, ioperm: 173,
  create_module: 174, init_module: 175, delete_module: 176, get_kernel_syms: 177, query_module: 178,
  quotactl: 179, nfsservctl: 180, getpmsg: 181, putpmsg: 182, afs_syscall: 183, tuxcall: 184, security: 185,
  lookup_dcookie: 212, vserver: 236, mbind: 237, set_mempolicy: 238, get_mempolicy: 239, kexec_load: 246,
  add_key: 248, request_key: 249, keyctl: 250, migrate_pages: 256, unshare: 272, move_pages: 279,
  perf_event_open: 298, fanotify_init: 300, open_by_handle_at: 304,
  setns: 308, process_vm_readv: 310, process_vm_writev: 311, kcmp: 312, finit_module: 313, bpf: 321,
  kexec_file_load: 320, userfaultfd: 323, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
  open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, clone3: 435,
  pidfd_getfd: 438, process_madvise: 440, mount_setattr: 442, quotactl_fd: 443, set_mempolicy_home_node: 450,
  chroot: 161, clock_settime: 227, vhangup: 153,
};

/** Syscalls refused with EPERM whatever their arguments. */
export const DENIED_SYSCALLS = [
  // namespaces and mounts
  "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
  // kernel keyring, BPF, perf, tracing other processes
  "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
  // modules, kexec, reboot, swap, accounting
  "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
  // clock, host identity, raw I/O, kernel log, quota
  "settimeofday", "clock_settime", "sethostname", "setdomainname", "iopl", "ioperm", "syslog", "quotactl", "quotactl_fd", "vhangup",
  // memory policy of other processes, userfaultfd, io_uring
  "mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node", "migrate_pages", "move_pages", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
  // handles, fanotify, obsolete or unimplemented
  "open_by_handle_at", "fanotify_init", "lookup_dcookie", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "getpmsg", "putpmsg", "afs_syscall", "tuxcall", "security", "vserver",
] as const;

/** Every CLONE_NEW* flag clone(2) accepts: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (Docker's mask). */
export const CLONE_NS_FLAGS = 0x7e020000;
/** unshare(2) also takes CLONE_NEWTIME (0x80; in clone(2) that bit is part of the exit signal). */
export const UNSHARE_NS_FLAGS = CLONE_NS_FLAGS | 0x80;
/** personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff. */
export const ALLOWED_PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff] as const;
/** socket(2) families refused: AF_ALG (38), AF_VSOCK (40). */
export const DENIED_SOCKET_FAMILIES = [38, 40] as const;

export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const X32_SYSCALL_BIT = 0x40000000;
export const SECCOMP_RET = { KILL_PROCESS: 0x80000000, ERRNO: 0x00050000, ALLOW: 0x7fff0000 } as const;
const EPERM = 1;
const ENOSYS = 38;

/** BPF opcodes used here (linux/bpf_common.h). */
const BPF = { LD_W_ABS: 0x20, JEQ_K: 0x15, JGE_K: 0x35, JSET_K: 0x45, RET_K: 0x06 } as const;
/** Offsets in struct seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64, low half first on little-endian). */
const DATA = { nr: 0, arch: 4, arg0Low: 16 } as const;

/** One classic-BPF instruction. */
export interface SockFilter {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

const ins = (code: number, k: number, jt = 0, jf = 0): SockFilter => ({ code, jt, jf, k: k >>> 0 });
const ret = (k: number): SockFilter => ins(BPF.RET_K, k);

/**
 * The filter's instructions for `arch` (a Node `process.arch`; default the host's).
 * @throws Error for any architecture but x64 (no tested syscall table).
 */
export function buildSeccompFilter(arch: string = process.arch): SockFilter[] {
  if (arch !== "x64") throw new Error(`seccomp: no syscall table for architecture ${arch} (only x64 is supported); refusing to run sandboxes unfiltered`);
  const nr = (name: string): number => {
    const n = X86_64[name];
    if (n === undefined || n < 0) throw new Error(`seccomp: unknown syscall ${name}`);
    return n;
  };
  const p: SockFilter[] = [
    ins(BPF.LD_W_ABS, DATA.arch),
    ins(BPF.JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    ret(SECCOMP_RET.KILL_PROCESS),
    ins(BPF.LD_W_ABS, DATA.nr),
    ins(BPF.JGE_K, X32_SYSCALL_BIT, 0, 1),
    ret(SECCOMP_RET.ERRNO | EPERM),
  ];
  // Each block starts with A = nr and either returns or falls through with A unchanged.
  for (const name of DENIED_SYSCALLS) p.push(ins(BPF.JEQ_K, nr(name), 0, 1), ret(SECCOMP_RET.ERRNO | EPERM));
  p.push(ins(BPF.JEQ_K, nr("clone3"), 0, 1), ret(SECCOMP_RET.ERRNO | ENOSYS));
  // Blocks that inspect an argument overwrite A, so each ends with its own return.
  const flagCheck = (name: string, mask: number): void => {
    p.push(ins(BPF.JEQ_K, nr(name), 0, 4), ins(BPF.LD_W_ABS, DATA.arg0Low), ins(BPF.JSET_K, mask, 0, 1), ret(SECCOMP_RET.ERRNO | EPERM), ret(SECCOMP_RET.ALLOW));
  };
  flagCheck("clone", CLONE_NS_FLAGS);
  flagCheck("unshare", UNSHARE_NS_FLAGS);
  // personality: allow-list of values, else EPERM.
  const pers = ALLOWED_PERSONALITIES;
  p.push(ins(BPF.JEQ_K, nr("personality"), 0, pers.length + 3), ins(BPF.LD_W_ABS, DATA.arg0Low));
  pers.forEach((v, i) => p.push(ins(BPF.JEQ_K, v, pers.length - i, 0)));
  p.push(ret(SECCOMP_RET.ERRNO | EPERM), ret(SECCOMP_RET.ALLOW));
  // socket: deny-list of families.
  const fams = DENIED_SOCKET_FAMILIES;
  p.push(ins(BPF.JEQ_K, nr("socket"), 0, fams.length + 3), ins(BPF.LD_W_ABS, DATA.arg0Low));
  fams.forEach((v, i) => p.push(ins(BPF.JEQ_K, v, fams.length - i, 0)));
  p.push(ret(SECCOMP_RET.ALLOW), ret(SECCOMP_RET.ERRNO | EPERM));
  p.push(ret(SECCOMP_RET.ALLOW));
  if (p.length > 4096) throw new Error("seccomp: program too long");
  for (const i of p) if (i.jt > 255 || i.jf > 255) throw new Error("seccomp: jump too far");
  return p;
}

/** The program as bwrap reads it from `--seccomp FD`: `struct sock_filter[]`, little-endian (x86_64). */
export function encodeSeccompFilter(program: readonly SockFilter[]): Buffer {
  const b = Buffer.alloc(program.length * 8);
  program.forEach((i, n) => {
    b.writeUInt16LE(i.code, n * 8);
    b.writeUInt8(i.jt, n * 8 + 2);
    b.writeUInt8(i.jf, n * 8 + 3);
    b.writeUInt32LE(i.k, n * 8 + 4);
  });
  return b;
}

/** Syscall number of `name` on x86_64 (tests). */
export function x86_64SyscallNumber(name: string): number | undefined {
  const n = X86_64[name];
  return n === undefined || n < 0 ? undefined : n;
}
