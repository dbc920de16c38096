/**
 * What every engine call rejects with: `kind` says what failed, the message names the file, tensor or limit at
 * fault. After `device-lost` or `internal`, load the model again (no page reload is needed).
 */
export interface TernlightError extends Error {
  name: 'TernlightError';
  kind: 'network' | 'model-file' | 'unsupported' | 'invalid-input' | 'invalid-request' | 'no-gpu' | 'device-lost'
    | 'device-limit' | 'gpu' | 'internal';
}

/** Progress of a model load, reported after each tensor reaches the GPU. */
export interface LoadProgress {
  bytesDone: number;
  bytesTotal: number;
  tensorsDone: number;
  tensorsTotal: number;
  layersReady: number;
  layersTotal: number;
  bytesPerSecond: number;
  etaSeconds: number;
}

export interface LoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Run the engine in a Web Worker (default) or in this page. */
  worker?: boolean;
  /** Explicit file URLs fetched whole (blob: URLs included), instead of a source. */
  files?: { config: string; weights: string; tokenizer: string };
  /** Size of the blocks models are cached in (default 4 MiB). */
  cacheBlockBytes?: number;
  /** Attention policy to run under (see `Engine.setAttentionPolicy`); default 'full'. */
  attentionPolicy?: string;
}

/** Attention weights of one head: `queries` rows (positions from `firstQuery`) over `keys` columns. */
export interface AttentionMap {
  layer: number;
  head: number;
  firstQuery: number;
  queries: number;
  keys: number;
  /** queries × keys, row-major; masked keys are 0. */
  weights: Float32Array;
  /** The text of each key position. */
  tokens: string[];
}

/** How spread out each head of one layer attends at the last position: 0 on one token, 1 evenly. */
export interface LayerEntropies {
  layer: number;
  entropies: Float32Array;
}

export interface GenerateOptions {
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  signal?: AbortSignal;
  /** Time each layer on the GPU (where the adapter has timestamp queries); see `Stats.stageSeconds`. */
  profile?: boolean;
  /** Live attention maps of one head (softmax, or a delta-rule layer's implicit attention) after every token
   * (and, with `overview`, every mapped layer's head entropies). */
  attention?: {
    layer: number;
    head: number;
    maxQueries?: number;
    onMap: (map: AttentionMap) => void;
    overview?: boolean;
    onOverview?: (layers: LayerEntropies[]) => void;
  };
}

export interface Stats {
  promptTokens: number;
  generatedTokens: number;
  ttftMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  weightBytes: number;
  /** KV caches and recurrent states as allocated. */
  stateBytes: number;
  /** The part of the KV caches the context fills now. */
  kvCacheBytes: number;
  /** The attention policy in force ('full': the model's own attention). */
  attentionPolicy: string;
  /** A `route:` policy's decisions after the last prefill: per routed layer, its attention entropy at the last
   * prompt token (normalised, 0..1) and whether it decodes block-sparse. Empty for other policies. */
  routes: { layer: number; entropy: number; sparse: boolean }[];
  /** Recurrent and conv states (fixed size). */
  recurrentBytes: number;
  contextTokens: number;
  maxContext: number;
  loadSeconds: number;
  downloadedBytes: number;
  /** The most checkpoint bytes the load held in host memory at once: one tensor and one cache block when streamed
   * (the whole file for a whole-file load). */
  loadPeakHostBytes: number;
  /** The checkpoint's largest tensor, to compare `loadPeakHostBytes` with. */
  largestTensorBytes: number;
  warnings: string[];
  /** While profiling: GPU seconds of the last forward by stage (embedding, each layer, head). */
  stageSeconds: Float64Array;
  /** KV cache plus recurrent state at contexts from 256 to 128K tokens. */
  contextMemory: { tokens: number; bytes: number }[];
  /** Each layer's mixer kind, its heads with an attention map (0 for mixers without one) and whether `ablate` can
   * switch them off. */
  layers: { kind: string; attentionHeads: number; switchableHeads: boolean }[];
  /** The kernel sizes the engine runs with; `fromCache` when they come from an `Engine.tune()` run on this adapter. */
  tuning: KernelSizes & { fromCache: boolean };
}

/** Workgroup and tile sizes of the kernels (see `Engine.tune`). */
export interface KernelSizes {
  wg: number;
  nr: number;
  /** Stored weight words a matrix-vector invocation reads per row and step (0: element by element). */
  vw: number;
  /** Whole outputs each matrix-vector invocation computes (0: invocations split the inputs instead). */
  rpl: number;
  /** The longest weight rows, in bytes, that take `rpl` (0: any). */
  rpl_row_bytes: number;
  /** The ternary integer matrix-vector kernel's invocations and outputs per workgroup (per invocation with rows). */
  ternary_wg: number;
  ternary_nr: number;
  /** Whether one-token ternary products give each invocation whole outputs rather than splitting the inputs. */
  ternary_rows: boolean;
  /** Whether ternary products sum two 16-bit products per 32-bit multiply rather than use dot4I8Packed. */
  ternary_swar: boolean;
  tm: number;
  tn: number;
  wg_x: number;
  wg_y: number;
  attn_kv_tile: number;
  /** The most workgroups decode attention splits each head's keys over (1: one per head). */
  attn_splits: number;
  /** The context length from which decode attention splits keys. */
  attn_split_from: number;
}

/** What `Engine.tune` measured and kept. */
export interface TuneReport {
  adapter: string;
  tuning: KernelSizes;
  /** False where Cache Storage is unavailable or full (the sizes then last for this call only). */
  saved: boolean;
  /** `split_from` trials time decode attention split and unsplit at the context in `tuning.attn_split_from`. */
  trials: {
    kernel: 'matvec' | 'matmul' | 'ternary_matvec' | 'decode_attention' | 'split_from';
    tuning: KernelSizes;
    ms: number;
  }[];
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatRequest {
  messages: ChatMessage[];
  stream?: boolean;
  temperature?: number;
  max_tokens?: number;
  top_p?: number;
  seed?: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: ChatMessage; finish_reason: 'stop' | 'length' }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: Partial<ChatMessage>; finish_reason: 'stop' | 'length' | null }[];
}

export declare class Engine {
  /** Streams the model at `source` (an http(s) base URL or a Hugging Face repo id `org/name[@revision]`). */
  static load(source: string | undefined, options?: LoadOptions): Promise<Engine>;
  /** Times kernel sizes on this adapter and keeps the fastest for engines loaded afterwards. */
  static tune(options?: { reps?: number; worker?: boolean }): Promise<TuneReport>;
  /** Pieces of text as tokens arrive. */
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<string>;
  chat: {
    completions: {
      create(request: ChatRequest & { stream: true }): Promise<AsyncGenerator<ChatCompletionChunk>>;
      create(request: ChatRequest): Promise<ChatCompletion>;
    };
  };
  /** One head's attention map of the last generation; capture of `layer` starts when first asked for. */
  attention(layer: number, head: number, options?: { maxQueries?: number }): Promise<AttentionMap | undefined>;
  /** Every attention layer's head entropies at the last position of the last generation. */
  overview(): Promise<LayerEntropies[]>;
  /** The native `ternlight bench` report, measured here (snake_case keys as the CLI prints them). */
  bench(options?: { contexts?: number[]; decodeSteps?: number; compareTokens?: number; reps?: number }): Promise<BenchReport>;
  /** Switches off heads of softmax-attention or Gated DeltaNet layers ([layer, head] pairs; empty restores) for the
   * following generations. */
  ablate(heads: [number, number][]): Promise<void>;
  /**
   * Runs the softmax-attention layers under a policy from the next generation on: 'full', 'sliding:W',
   * 'sliding:W+sinks:S' (StreamingLLM) or per layer 'layers:0-5=full,6-23=sliding:512'.
   */
  setAttentionPolicy(policy: string): Promise<Stats>;
  stats(): Promise<Stats>;
  unload(): Promise<void>;
}

/** What `bench` measures; the same keys as `ternlight bench --json`. */
export interface BenchReport {
  model_type: string;
  trained_positions: number;
  device: { name: string; backend: string; type: string; shader_f16: boolean; subgroups: boolean; timestamps: boolean };
  load_s: number;
  decode_dispatches_per_token: number;
  /** From `from_context` tokens on, decode splits attention's keys over several workgroups (flash-decoding) and
   * takes `dispatches_per_token` instead; null where the device's tuning does not split them. */
  long_context_decode: { dispatches_per_token: number; from_context: number } | null;
  memory: { weights_bytes: number; state_bytes_allocated: number };
  roofline: { copy_bytes_per_s: number; decode_bound_ms_per_token: number };
  contexts: {
    context: number;
    prefill_tok_s: number;
    prefill_ms: number;
    decode_ms_per_token: number;
    decode_fraction_of_roofline: number;
  }[];
  prefill_vs_stepping: { tokens: number; prefill_s: number; stepping_s: number; speedup: number };
}
