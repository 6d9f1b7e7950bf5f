// What dist/runtime.cjs gets for `require("iconv-lite")` (scripts/build.mjs). body-parser and raw-body use
// iconv-lite to decode every request body with a charset, but nearly all of them are UTF-8, which
// iconv-lite itself decodes with Node's StringDecoder plus a stripped leading BOM. That case is done
// here, the same way (same calls, same results: test/runtime-bundle.test.ts); any other charset, and
// any other property, goes to the real iconv-lite, embedded compressed in the bundle and compiled on
// first use (scripts/lazy-packages.mjs). Saves compiling 0.5 MB of encoding tables per instance: in a
// pre-warmed slot, whose warm-up request has a JSON body, ~2 MiB of heap.
"use strict";
const { StringDecoder } = require("node:string_decoder");

let real;
const load = () => (real ??= require("lazy:iconv-lite"));

const BOM = "\uFEFF";

/** iconv-lite's canonical name (lib/index.js `_canonicalizeEncoding`) is "utf8". */
function isUtf8(encoding) {
  if (encoding === "utf-8" || encoding === "utf8") return true;
  return String(encoding).toLowerCase().replace(/:\d{4}$|[^0-9a-z]/g, "") === "utf8";
}

/** iconv-lite's InternalDecoder for utf8, wrapped in its StripBOM unless `options.stripBOM === false`. */
class Utf8Decoder {
  constructor(options) {
    this.decoder = new StringDecoder("utf8");
    this.options = options || {};
    this.pass = this.options.stripBOM === false;
  }

  write(buf) {
    let res = this.decoder.write(Buffer.isBuffer(buf) ? buf : Buffer.from(buf));
    if (this.pass || !res) return res;
    if (res[0] === BOM) {
      res = res.slice(1);
      if (typeof this.options.stripBOM === "function") this.options.stripBOM();
    }
    this.pass = true;
    return res;
  }

  end() {
    return this.decoder.end();
  }
}

const front = {
  getDecoder(encoding, options) {
    return isUtf8(encoding) ? new Utf8Decoder(options) : load().getDecoder(encoding, options);
  },
  decode(buf, encoding, options) {
    // Strings take iconv-lite's deprecated path (it warns once): leave that to it.
    if (typeof buf === "string" || !isUtf8(encoding)) return load().decode(buf, encoding, options);
    const decoder = new Utf8Decoder(options);
    const res = decoder.write(buf);
    const trail = decoder.end();
    return trail ? res + trail : res;
  },
  encodingExists(encoding) {
    return isUtf8(encoding) || load().encodingExists(encoding);
  },
};

module.exports = new Proxy(front, {
  get: (target, key) => (Object.hasOwn(target, key) ? target[key] : load()[key]),
  has: (target, key) => key in target || key in load(),
});
