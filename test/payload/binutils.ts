/**
 * What GNU binutils say about a file, parsed, so tests compare fleetpatch's reading with readelf's
 * and nm's instead of with numbers copied by hand.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function tool(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
}

export interface ReadelfSection {
  index: number;
  name: string;
  type: string;
  offset: bigint;
  size: bigint;
  entsize: bigint;
  flags: string;
  link: number;
  info: number;
  align: bigint;
}

/** `readelf -S --wide`. */
export async function readelfSections(file: string): Promise<ReadelfSection[]> {
  const { stdout } = await tool('readelf', ['-S', '--wide', file]);
  const out: ReadelfSection[] = [];
  const re = /^\s*\[\s*(\d+)\]\s+(\S+)\s+(\S+)\s+([0-9a-f]{16})\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([A-Za-z]*)\s*(\d+)\s+(\d+)\s+(\d+)\s*$/;
  for (const line of stdout.split('\n')) {
    const m = re.exec(line);
    if (!m || m[1] === '0') continue;
    out.push({
      index: Number(m[1]),
      name: m[2]!,
      type: m[3]!,
      offset: BigInt(`0x${m[5]}`),
      size: BigInt(`0x${m[6]}`),
      entsize: BigInt(`0x${m[7]}`),
      flags: m[8]!,
      link: Number(m[9]),
      info: Number(m[10]),
      align: BigInt(m[11]!),
    });
  }
  return out;
}

export interface ReadelfRelocation {
  section: string;
  offset: bigint;
  type: string;
  symbol: string;
  addend: bigint;
}

/** `readelf -r --wide`: every RELA entry with the name of its relocation section. */
export async function readelfRelocations(file: string): Promise<ReadelfRelocation[]> {
  const { stdout } = await tool('readelf', ['-r', '--wide', file]);
  const out: ReadelfRelocation[] = [];
  let section = '';
  for (const line of stdout.split('\n')) {
    const head = /^Relocation section '([^']+)'/.exec(line);
    if (head) {
      section = head[1]!;
      continue;
    }
    const m = /^([0-9a-f]{16})\s+([0-9a-f]{16})\s+(\S+)\s+([0-9a-f]{16})\s+(.*?)\s+([+-])\s+([0-9a-f]+)\s*$/.exec(line);
    if (!m) continue;
    out.push({ section, offset: BigInt(`0x${m[1]}`), type: m[3]!, symbol: m[5]!, addend: (m[6] === '-' ? -1n : 1n) * BigInt(`0x${m[7]}`) });
  }
  return out;
}

/** `readelf -n`: the GNU build-id. */
export async function readelfBuildId(file: string): Promise<string> {
  const { stdout } = await tool('readelf', ['-n', '--wide', file]);
  const m = /Build ID:\s*([0-9a-f]+)/.exec(stdout);
  if (!m) throw new Error(`readelf -n shows no build-id for ${file}`);
  return m[1]!;
}

/** `readelf -x <section>`: the section's bytes. */
export async function readelfHexDump(file: string, section: string): Promise<Uint8Array> {
  const { stdout } = await tool('readelf', ['-x', section, file]);
  const bytes: number[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s*0x[0-9a-f]+\s+((?:[0-9a-f]{2,8}\s)+)/.exec(line);
    if (!m) continue;
    for (const word of m[1]!.trim().split(/\s+/)) for (let i = 0; i < word.length; i += 2) bytes.push(Number.parseInt(word.slice(i, i + 2), 16));
  }
  return Uint8Array.from(bytes);
}

export interface NmSymbol {
  name: string;
  /** null for undefined symbols. */
  value: bigint | null;
  size: bigint | null;
  type: string;
}

/** `nm -S`: name, value, size and nm's type letter of every symbol nm lists. */
export async function nmSymbols(file: string): Promise<NmSymbol[]> {
  const { stdout } = await tool('nm', ['-S', file]);
  const out: NmSymbol[] = [];
  for (const line of stdout.split('\n')) {
    const sized = /^([0-9a-f]{16}) ([0-9a-f]{16}) (\S) (\S+)$/.exec(line);
    const plain = /^([0-9a-f]{16}) (\S) (\S+)$/.exec(line);
    const undef = /^\s+U (\S+)$/.exec(line);
    if (sized) out.push({ value: BigInt(`0x${sized[1]}`), size: BigInt(`0x${sized[2]}`), type: sized[3]!, name: sized[4]! });
    else if (plain) out.push({ value: BigInt(`0x${plain[1]}`), size: null, type: plain[2]!, name: plain[3]! });
    else if (undef) out.push({ value: null, size: null, type: 'U', name: undef[1]! });
  }
  return out;
}

/** Parses the descriptor of a GNU build-id note (independently of src/payload/note.ts). */
export function noteDescriptorHex(note: Uint8Array): string {
  const v = new DataView(note.buffer, note.byteOffset, note.byteLength);
  const namesz = v.getUint32(0, true);
  const descsz = v.getUint32(4, true);
  const at = 12 + Math.ceil(namesz / 4) * 4;
  return Buffer.from(note.subarray(at, at + descsz)).toString('hex');
}

export interface ObjdumpInstruction {
  /** Bytes from the start of the function. */
  offset: number;
  mnemonic: string;
  /** The instruction as objdump prints it, without the address. */
  text: string;
}

/**
 * `objdump -d --no-show-raw-insn`: the instructions of function `name`, with their offsets from
 * the function's start (for a relocatable object, from its symbol; for an image, its address).
 */
export async function objdumpFunction(file: string, name: string): Promise<ObjdumpInstruction[]> {
  const { stdout } = await tool('objdump', ['-d', '--no-show-raw-insn', file]);
  const lines = stdout.split('\n');
  const head = lines.findIndex((l) => new RegExp(`^([0-9a-f]+) <${name}>:$`).test(l));
  if (head === -1) throw new Error(`objdump found no function ${name} in ${file}`);
  const start = BigInt(`0x${/^([0-9a-f]+)/.exec(lines[head]!)![1]}`);
  const out: ObjdumpInstruction[] = [];
  for (const line of lines.slice(head + 1)) {
    const m = /^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$/.exec(line);
    if (!m) break;
    out.push({ offset: Number(BigInt(`0x${m[1]}`) - start), mnemonic: m[2]!, text: `${m[2]} ${m[3]}`.trim() });
  }
  return out;
}

/** The offset of the first instruction whose mnemonic matches (e.g. a conditional jump, a call). */
export async function firstInstruction(file: string, fn: string, mnemonic: RegExp): Promise<ObjdumpInstruction> {
  const insns = await objdumpFunction(file, fn);
  const found = insns.find((i) => mnemonic.test(i.mnemonic));
  if (!found) throw new Error(`objdump shows no ${mnemonic} in ${fn} of ${file}: ${insns.map((i) => i.text).join('; ')}`);
  return found;
}
