/**
 * fleetpatch's payload module: read, check, build and sign Xen live-patch payloads exactly as Xen
 * does (see ../../../shared/spec/xen-livepatch.md sections 1-2 and docs/payloads.md).
 *
 * Reading
 *   parsePayload(bytes, { name? }) -> LivepatchPayload
 *       Every check that needs only the payload, in Xen's order, with Xen's errno (XenError).
 *       The model: format ('livepatch' | 'xsplice'), buildId/depends/xenDepends (bytes + hex),
 *       funcs (name, newAddress/oldAddress as PayloadAddress, newSymbol/oldSymbol, sizes, nop,
 *       expect), hooks, modinfo, writableSections/hasWritableData/canReapply, and the ELF pieces:
 *       sections (with bytes), symbols, relocations by target section, layout (move_payload).
 *   constantReturnOf(payload, symbolOrAddress, { hypervisor? }) -> FunctionResult
 *       What a payload function returns: its code decoded (iced-x86) and evaluated up to its
 *       `ret` through the payload's relocations; a string, an integer, or undefined with `why`
 *       ("it branches at +0x12 (jne 0x1a)"). objectFunctionResult(relocatableCode(readElf(bytes)),
 *       symbol) does the same for any ET_REL object, and constantReturnAt(memory, address) for a
 *       linked image. cannotTell(fn, why) is the sentence.
 *
 * Hypervisor images
 *   readImage(elfBytes, name?) -> HypervisorImage       a linked xen-syms: build-id, symbols, code
 *   defineImage(definition) -> HypervisorImage          a declared image with synthesized code
 *   DEFAULT_IMAGE                                       built-in; xen_extra_version returns "-unstable"
 *   image.returns.get('xen_extra_version')              what unpatched functions return
 *   image.bytesAt(address, n), image.stringAt(address)  the image's memory
 *
 * Xen's upload
 *   checkUpload({ name, bytes, image, loaded?, loadAddress? }) -> CheckedPayload
 *       Steps 1-8 of the spec; throws XenError. The result carries the resolved old/new addresses
 *       of each function, Xen's symbol table for the payload, and `exportedSymbols` — pass
 *       { name, buildId, symbols: exportedSymbols, loadAddress, pages } back as a LoadedPayload.
 *   checkDepends({ name, depends }, target)
 *       The APPLY dependency check with its sentence ("depends on build-id 56b2…, but the top of
 *       the stack is xen_hello_world (fc36…)").
 *
 * Building and signing (these two use node:crypto; everything else is pure)
 *   buildPayload(spec, { image? }) -> Uint8Array        spec validated by PayloadSpecSchema (zod)
 *   payloadObject(spec, { image? }) -> ElfObject        the same payload before it is written
 *   writeElfObject(object) -> Uint8Array                the raw ET_REL writer underneath
 *   withBuildId(bytes) -> Uint8Array                    fill .note.gnu.build-id as ld --build-id=sha1
 *   generateSigningKey, signPayload, verifyPayload, read/…ToFile for key and signature files
 *
 * Workflow code (bundled, deterministic) must import the pure files directly (build-id.ts,
 * note.ts, elf.ts, model.ts), not this index, which pulls in node:crypto. returns.ts, x86.ts,
 * image.ts and upload-check.ts (which reads images) have no node: imports either, but load the
 * iced-x86 decoder, whose CommonJS wrapper reads its WebAssembly with fs: not for workflow bundles.
 */
export {
  buildIdFromHex, buildIdToHex, buildIdsEqual, compareBuildIds, isBuildIdHex, shortBuildId, type BuildId,
} from './build-id.ts';
export {
  parseBuildIdNote, encodeBuildIdNote, NT_GNU_BUILD_ID, NOTE_HEADER_SIZE, type BuildIdNote, type BuildIdNoteCheck,
} from './note.ts';
export {
  readElf, relocationTypeName, type ElfFile, type ElfHeader, type ElfSection, type ElfSymbol, type ElfRelaRecord,
} from './elf.ts';
export {
  parsePayload, isPayloadSymbol, SECTION, FUNC_STRUCT, FUNC_FIELD, NOP_MAX_SIZE, PATCH_INSN_SIZE, LIVEPATCH_RANGE,
  type LivepatchPayload, type PayloadFormat, type PayloadFunc, type PayloadAddress, type PayloadSection,
  type PayloadSymbol, type PayloadRelocation, type PayloadHooks, type ModinfoEntry, type FuncExpectation,
  type PayloadLayout, type ParseOptions,
} from './model.ts';
export {
  constantReturnOf, constantReturnAt, objectFunctionResult, relocatableCode, cannotTell, reasonAbout, fromConstant,
  type FunctionResult, type ConstantReturn, type CodeMemory, type MemoryRegion, type RelocatableCode, type HypervisorView,
  type ObjectResultOptions, type LinkedResultOptions,
} from './returns.ts';
export { decodeX86, type X86Instruction, type X86Operand, type X86Flow, type Gpr } from './x86.ts';
export {
  readImage, defineImage, lookupImageSymbol, DEFAULT_IMAGE, XEN_TEXT_BASE,
  type HypervisorImage, type ImageSymbol, type ImageDefinition, type ImageFunctionDefinition,
} from './image.ts';
export {
  checkUpload, checkDepends, nextLoadAddress, MAX_PAYLOAD_SIZE, MAX_NAME_LENGTH,
  type UploadRequest, type CheckedPayload, type LoadedPayload, type ExportedSymbol, type ResolvedFunc,
  type ResolvedSymbol, type DependencyTarget,
} from './upload-check.ts';
export {
  buildPayload, payloadObject, withBuildId, parsePayloadSpec, writeElfObject, PayloadSpecSchema, PayloadFuncSpecSchema,
  type PayloadSpec, type PayloadFuncSpec, type BuildOptions, type ElfObject, type ElfObjectSection,
  type ElfObjectSymbol, type ElfObjectRelocation,
} from './builder.ts';
export {
  generateSigningKey, signPayload, verifyPayload, readSigningKey, readPublicKey, readSignature,
  signingKeyToFile, publicKeyToFile, SigningKeyFileSchema, PublicKeyFileSchema, SignatureFileSchema,
  type SigningKey, type PublicKey, type PayloadSignature, type SigningKeyFile, type PublicKeyFile,
} from './signing.ts';
