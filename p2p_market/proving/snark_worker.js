// The Node.js worker of the groth16 and plonk back-ends (p2p_market/proving/snark.py).
//
// Loads snarkjs once, then answers requests: one JSON object per line on stdin, one
// JSON reply per line on stdout, in order. Exits when stdin closes (so it never
// outlives the Python process that started it). Nothing else is written to stdout.
//
// Requests carry artifact paths WITH their expected SHA-256; an artifact is read
// once, hashed, refused if the hash differs ("artifact hash mismatch"), and kept in
// memory by hash, so a file changed after the check is never used.
//
//   {"id": 1, "op": "ping"}
//     -> {"id": 1, "ok": true, "snarkjs": "0.7.6"}
//   {"id": 2, "op": "prove", "system": "groth16"|"plonk", "input": {...},
//    "wasm": [path, sha256hex], "zkey": [path, sha256hex]}
//     -> {"id": 2, "ok": true, "proof": {...}, "publicSignals": ["..."]}
//     -> {"id": 2, "ok": true, "invalid": "why"}  (the inputs admit no witness)
//   {"id": 3, "op": "check", "input": {...}, "wasm": [path, sha256hex]}
//     -> {"id": 3, "ok": true, "invalid": null | "why"}
//   {"id": 4, "op": "verify", "system": ..., "input": {...}, "proof": {...},
//    "publicSignals": [...], "wasm": [path, sha256hex], "vkey": [path, sha256hex]}
//     -> {"id": 4, "ok": true, "valid": true|false, "why": "..."}
//   any failure to do the work -> {"id": n, "ok": false, "error": "one line"}
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const readline = require("readline");
const util = require("util");

// stdout carries the replies only: whatever a library or a circuit's log() prints
// goes to stderr.
const stdoutWrite = process.stdout.write.bind(process.stdout);
console.log = (...args) => process.stderr.write(util.format(...args) + "\n");
console.info = console.log;
console.debug = console.log;
console.warn = console.log;

let snarkjs;
let circomRuntime;
try {
    snarkjs = require("snarkjs");
    circomRuntime = require("circom_runtime");
} catch (e) {
    process.stderr.write(`snark worker: cannot load snarkjs (run npm ci): ${e.message}\n`);
    process.exit(3);
}
const SNARKJS_VERSION = JSON.parse(
    fs.readFileSync(require("path").join(require.resolve("snarkjs"), "..", "..", "package.json")),
).version;

const artifacts = new Map(); // sha256 hex -> Uint8Array
const calculators = new Map(); // wasm sha256 hex -> witness calculator
const vkeys = new Map(); // vkey sha256 hex -> parsed verification key

class InvalidInputs extends Error {}

function oneLine(e) {
    const text = e && e.message ? e.message : String(e);
    return text.replace(/\s+/g, " ").trim().slice(0, 400);
}

function artifact(ref, what) {
    if (!Array.isArray(ref) || ref.length !== 2) throw new Error(`${what}: want [path, sha256]`);
    const [path, want] = ref;
    const cached = artifacts.get(want);
    if (cached !== undefined) return cached;
    let data;
    try {
        data = fs.readFileSync(path);
    } catch (e) {
        throw new Error(`cannot read the ${what} ${path}: ${e.code || oneLine(e)}`);
    }
    const got = crypto.createHash("sha256").update(data).digest("hex");
    if (got !== want) {
        throw new Error(`artifact hash mismatch: the ${what} ${path} has SHA-256 ${got}, the market names ${want}`);
    }
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    artifacts.set(want, bytes);
    return bytes;
}

async function calculator(ref) {
    const bytes = artifact(ref, "wasm");
    let wc = calculators.get(ref[1]);
    if (wc === undefined) {
        wc = await circomRuntime.WitnessCalculatorBuilder(bytes);
        calculators.set(ref[1], wc);
    }
    return wc;
}

function vkey(ref) {
    let vk = vkeys.get(ref[1]);
    if (vk === undefined) {
        const bytes = artifact(ref, "verification key");
        try {
            vk = JSON.parse(Buffer.from(bytes).toString("utf8"));
        } catch (e) {
            throw new Error(`the verification key is not JSON: ${oneLine(e)}`);
        }
        vkeys.set(ref[1], vk);
    }
    return vk;
}

function toBigInts(value) {
    if (typeof value === "string") return BigInt(value);
    if (Array.isArray(value)) return value.map(toBigInts);
    throw new InvalidInputs("an input value is neither a decimal string nor an array");
}

// circom's hash of a signal name (FNV-1a, 64 bits), as its witness calculator has it.
function fnvHash(str) {
    let hash = 0xcbf29ce484222325n;
    for (let i = 0; i < str.length; i++) {
        hash ^= BigInt(str.charCodeAt(i));
        hash = (hash * 0x100000001b3n) % 2n ** 64n;
    }
    return hash.toString(16).padStart(16, "0");
}

// A scalar signal takes a string, an array signal an array: one form per input (the
// witness calculator itself only counts the values).
function checkShape(wc, name, value) {
    const exports = wc.instance && wc.instance.exports;
    if (!exports || typeof exports.getInputSignalSize !== "function") return;
    const h = fnvHash(name);
    const size = exports.getInputSignalSize(parseInt(h.slice(0, 8), 16), parseInt(h.slice(8, 16), 16));
    if (size < 0) throw new InvalidInputs(`Signal ${name} not found`);
    if (size === 1 && typeof value !== "string") throw new InvalidInputs(`Signal ${name} is a scalar`);
    if (size > 1 && !Array.isArray(value)) throw new InvalidInputs(`Signal ${name} is an array`);
}

async function witness(req, bin) {
    const wc = await calculator(req.wasm);
    const input = {};
    for (const [k, v] of Object.entries(req.input)) {
        checkShape(wc, k, v);
        input[k] = toBigInts(v);
    }
    try {
        return bin ? await wc.calculateWTNSBin(input, true) : await wc.calculateWitness(input, true);
    } catch (e) {
        throw new InvalidInputs(oneLine(e));
    }
}

function backend(system) {
    if (system === "groth16") return snarkjs.groth16;
    if (system === "plonk") return snarkjs.plonk;
    throw new Error(`unknown proof system ${JSON.stringify(system)}`);
}

async function handle(req) {
    switch (req.op) {
        case "ping":
            return { ok: true, snarkjs: SNARKJS_VERSION };
        case "check":
            try {
                await witness(req, false);
                return { ok: true, invalid: null };
            } catch (e) {
                if (e instanceof InvalidInputs) return { ok: true, invalid: e.message };
                throw e;
            }
        case "prove": {
            const sys = backend(req.system);
            const zkey = artifact(req.zkey, "zkey");
            let wtns;
            try {
                wtns = await witness(req, true);
            } catch (e) {
                if (e instanceof InvalidInputs) return { ok: true, invalid: e.message };
                throw e;
            }
            const { proof, publicSignals } = await sys.prove(
                { type: "mem", data: zkey },
                { type: "mem", data: wtns },
            );
            return { ok: true, proof, publicSignals };
        }
        case "verify": {
            const sys = backend(req.system);
            const vk = vkey(req.vkey);
            if (vk.protocol !== req.system) {
                throw new Error(`the verification key is for ${vk.protocol}, not ${req.system}`);
            }
            if (!req.proof || req.proof.protocol !== req.system) {
                return { ok: true, valid: false, why: "not a proof of this system" };
            }
            const ps = req.publicSignals;
            if (!Array.isArray(ps) || ps.length !== vk.nPublic) {
                return { ok: true, valid: false, why: "wrong number of public signals" };
            }
            // The proof must be about THESE inputs: its public signals are the
            // circuit's outputs and public inputs computed from them.
            let w;
            try {
                w = await witness(req, false);
            } catch (e) {
                if (e instanceof InvalidInputs) return { ok: true, valid: false, why: `inputs: ${e.message}` };
                throw e;
            }
            for (let i = 0; i < vk.nPublic; i++) {
                if (w[i + 1].toString() !== ps[i]) {
                    return { ok: true, valid: false, why: "public signals do not match the inputs" };
                }
            }
            let valid;
            try {
                valid = await sys.verify(vk, ps, req.proof);
            } catch (e) {
                return { ok: true, valid: false, why: `malformed proof: ${oneLine(e)}` };
            }
            return { ok: true, valid: valid === true, why: valid === true ? "" : "proof does not verify" };
        }
        default:
            throw new Error(`unknown op ${JSON.stringify(req.op)}`);
    }
}

function reply(obj) {
    stdoutWrite(JSON.stringify(obj) + "\n");
}

async function main() {
    const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of rl) {
        let req;
        try {
            req = JSON.parse(line);
        } catch (e) {
            reply({ id: null, ok: false, error: `request is not JSON: ${oneLine(e)}` });
            continue;
        }
        let out;
        try {
            out = await handle(req);
        } catch (e) {
            out = { ok: false, error: oneLine(e) };
        }
        reply({ id: req.id, ...out });
    }
    // stdin closed: the parent is done (or gone). snarkjs keeps worker threads alive,
    // so leave explicitly.
    process.exit(0);
}

main().catch((e) => {
    process.stderr.write(`snark worker: ${oneLine(e)}\n`);
    process.exit(1);
});
