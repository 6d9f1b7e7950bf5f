/**
 * What of the host's file system every bubblewrap sandbox sees, the instances' (src/sandbox/process/
 * bwrap-args.ts) and the builds' (src/builder/build-sandbox.ts) alike: one list, so the two cannot drift.
 */

/** /etc files Node and outbound networking need (DNS, TLS roots); nothing else of /etc is visible (no shadow, no keys). */
export const SANDBOX_ETC_FILES = ["/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/localtime", "/etc/ssl/openssl.cnf", "/etc/ssl/certs", "/etc/ca-certificates"] as const;

/** Merged-/usr top-level entries, recreated as symlinks (or bound read-only on a split-/usr host). */
export const SANDBOX_TOP_LEVEL = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] as const;
