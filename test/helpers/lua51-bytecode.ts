/**
 * A reader for Lua 5.1 bytecode (the `string.dump` / `luac -o` format, lundump.c/ldump.c of
 * Lua 5.1.5): every function prototype with its local variables' pc ranges and its upvalues,
 * which is what `luac5.1 -l -l` lists as "locals (n)" and "upvalues (n)". The test suite uses
 * it to hold the NodeMCU agent to that firmware's Lua 5.1 parser limits (LUAI_MAXVARS 50,
 * LUAI_MAXUPVALUES 60) without a native luac: test/helpers/lua.ts dumps the chunk with the
 * WebAssembly Lua 5.1.
 *
 * Format (ldump.c): a 12-byte header (ESC "Lua", version 0x51, format 0, endianness, sizeof
 * int, size_t, Instruction, lua_Number, integral flag), then the main function:
 * source (string), linedefined (int), lastlinedefined (int), nups, numparams, is_vararg,
 * maxstacksize (bytes), code (int n, n instructions), constants (int n, each a type byte and
 * its value), nested functions (int n, each a function), lineinfo (int n, n ints), locvars
 * (int n, each name, startpc, endpc), upvalue names (int n, n strings). A string is a size_t
 * length (0 = none) counting a trailing NUL.
 */

/** One function prototype of a Lua 5.1 chunk. */
export interface Lua51Function {
  /** "main" for the main chunk, else `line N` (the line its `function` keyword is on). */
  where: string;
  /** 0 for the main chunk, else the first line of the function. */
  linedefined: number;
  /** Parameters (counted among the locals). */
  numparams: number;
  /** Local variables in declaration order with their pc ranges (instruction indexes, 0-based). */
  locals: Array<{ name: string; startpc: number; endpc: number }>;
  /** Upvalue count (nups; the names are present only with debug information). */
  upvalues: number;
  /** Upvalue names. */
  upvalueNames: string[];
  /** Source line per instruction. */
  lineinfo: number[];
}

/**
 * Parse a Lua 5.1 binary chunk into its functions, depth first (main chunk first, then nested
 * functions in the order luac -l lists them).
 * @throws Error when `chunk` is not a Lua 5.1 chunk this reader understands.
 */
export function parseLua51Chunk(chunk: Uint8Array): Lua51Function[] {
  const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (b.length < 12 || b.toString('latin1', 0, 4) !== '\x1bLua' || b[4] !== 0x51 || b[5] !== 0) {
    throw new Error('not a Lua 5.1 binary chunk');
  }
  const little = b[6] === 1;
  const [sInt, sSize, sInstr, sNum] = [b[7], b[8], b[9], b[10]];
  if (![4, 8].includes(sInt) || ![4, 8].includes(sSize) || sInstr !== 4) throw new Error('unsupported Lua 5.1 chunk sizes');
  let pos = 12;
  const need = (n: number) => {
    if (pos + n > b.length) throw new Error('truncated Lua 5.1 chunk');
  };
  const uint = (size: number): number => {
    need(size);
    let v = 0;
    for (let i = 0; i < size; i++) v += b[pos + (little ? i : size - 1 - i)] * 2 ** (8 * i);
    pos += size;
    return v;
  };
  const int = () => {
    const v = uint(sInt);
    return v >= 2 ** (8 * sInt - 1) ? v - 2 ** (8 * sInt) : v;
  };
  const byte = () => uint(1);
  const str = (): string => {
    const n = uint(sSize);
    if (n === 0) return '';
    need(n);
    const s = b.toString('latin1', pos, pos + n - 1); // without the trailing NUL
    pos += n;
    return s;
  };
  const out: Lua51Function[] = [];
  const fn = (main: boolean): void => {
    str(); // source
    const linedefined = int();
    int(); // lastlinedefined
    const nups = byte();
    const numparams = byte();
    byte(); // is_vararg
    byte(); // maxstacksize
    const ncode = int();
    need(ncode * sInstr);
    pos += ncode * sInstr;
    const me: Lua51Function = { where: main ? 'main' : `line ${linedefined}`, linedefined, numparams, locals: [], upvalues: nups, upvalueNames: [], lineinfo: [] };
    out.push(me);
    const nk = int();
    for (let i = 0; i < nk; i++) {
      const t = byte();
      if (t === 0) continue; // nil
      else if (t === 1) byte(); // boolean
      else if (t === 3) (need(sNum), (pos += sNum)); // number
      else if (t === 4) str(); // string
      else throw new Error(`bad constant type ${t}`);
    }
    const np = int();
    for (let i = 0; i < np; i++) fn(false);
    const nline = int();
    for (let i = 0; i < nline; i++) me.lineinfo.push(int());
    const nloc = int();
    for (let i = 0; i < nloc; i++) me.locals.push({ name: str(), startpc: int(), endpc: int() });
    const nup = int();
    for (let i = 0; i < nup; i++) me.upvalueNames.push(str());
  };
  fn(true);
  if (pos !== b.length) throw new Error(`${b.length - pos} bytes after the main function`);
  return out;
}

/**
 * `luac5.1 -s`: the same Lua 5.1 chunk without debug information (ldump.c with strip set:
 * no source name, and empty lineinfo, locvars and upvalue-name lists in every function).
 * Code and constants are copied byte for byte; the result loads in any Lua 5.1 with the
 * same header sizes.
 * @throws Error when `chunk` is not a Lua 5.1 chunk this reader understands.
 */
export function stripLua51Chunk(chunk: Uint8Array): Buffer {
  const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  parseLua51Chunk(b); // validates the whole chunk first
  const little = b[6] === 1;
  const [sInt, sSize, , sNum] = [b[7], b[8], b[9], b[10]];
  const out: Buffer[] = [b.subarray(0, 12)];
  let pos = 12;
  const uint = (size: number): number => {
    let v = 0;
    for (let i = 0; i < size; i++) v += b[pos + (little ? i : size - 1 - i)] * 2 ** (8 * i);
    pos += size;
    return v;
  };
  const skipStr = () => {
    const n = uint(sSize);
    pos += n;
  };
  const copy = (from: number) => out.push(b.subarray(from, pos));
  const zeroSize = Buffer.alloc(sSize);
  const zeroInt = Buffer.alloc(sInt);
  const fn = (): void => {
    skipStr(); // source
    out.push(zeroSize);
    let from = pos;
    pos += 2 * sInt + 4; // linedefined, lastlinedefined, nups, numparams, is_vararg, maxstacksize
    const ncode = uint(sInt);
    pos += ncode * 4;
    const nk = uint(sInt);
    for (let i = 0; i < nk; i++) {
      const t = b[pos++];
      if (t === 1) pos += 1;
      else if (t === 3) pos += sNum;
      else if (t === 4) skipStr();
    }
    const np = uint(sInt);
    copy(from);
    for (let i = 0; i < np; i++) fn();
    const nline = uint(sInt);
    pos += nline * sInt; // lineinfo
    const nloc = uint(sInt);
    for (let i = 0; i < nloc; i++) (skipStr(), (pos += 2 * sInt));
    const nup = uint(sInt);
    for (let i = 0; i < nup; i++) skipStr();
    out.push(zeroInt, zeroInt, zeroInt);
    from = pos;
  };
  fn();
  return Buffer.concat(out);
}
