/** A message frame as Herald sends it. `topic` is set for topic messages. */
export interface HeraldMessage {
  type: "message";
  id: string;
  seq: number;
  topic?: string;
  title?: string;
  body?: string;
  data?: Record<string, unknown>;
  created_at: string;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ConnectOptions {
  /** `ws://host/ws` or `wss://host/ws`. */
  url: string;
  /** A client token (JWT). Or use `getToken`, which is also used to refresh it. */
  token?: string;
  getToken?: () => Promise<string> | string;
  /** Topics to subscribe to (and re-subscribe after every reconnect). */
  topics?: string[];
  /** Where the last seqs are kept between runs (default: localStorage, else memory). */
  storage?: StorageLike;
  /** Ack every message as it arrives (default true). */
  autoAck?: boolean;
  /** Replay the retained inbox on the very first connect (default false). */
  replayOnFirstConnect?: boolean;
  /** Reconnect backoff: exponential from this (default 250 ms)… */
  minBackoffMs?: number;
  /** …up to this (default 15 s), with full jitter. */
  maxBackoffMs?: number;
  /** After a `1012` (server restarting), retries stay under this until connected (default 2 s). */
  restartBackoffMaxMs?: number;
  /** Refresh the token this long before it expires (default 30 s). */
  refreshBeforeMs?: number;
  /** How many recent ids to remember for de-duplication (default 2000). */
  dedupe?: number;
  /** A WebSocket implementation, where there is no global one. */
  WebSocket?: unknown;
}

export interface HeraldEvents {
  open: CustomEvent<{ session_id: string; user_id: string; heartbeat_s: number }>;
  message: CustomEvent<HeraldMessage>;
  topic: CustomEvent<HeraldMessage>;
  resumed: CustomEvent<{ seq: number; replayed: number; complete: boolean }>;
  subscribed: CustomEvent<{ topic: string; seq: number; replayed?: number; complete?: boolean }>;
  unsubscribed: CustomEvent<{ topic: string }>;
  error: CustomEvent<{ code: string; message?: string; topic?: string }>;
  /** `delayMs`: when the next connect is tried (null: it is not). */
  close: CustomEvent<{ code: number; reason: string; willReconnect: boolean; delayMs: number | null }>;
}

/** The wait before reconnect attempt `attempt`: exponential from `minMs`, capped at `capMs`, full jitter. */
export declare function backoffDelay(attempt: number, minMs: number, capMs: number, random?: () => number): number;

export declare class HeraldClient extends EventTarget {
  constructor(opts: ConnectOptions);
  readonly userId: string | null;
  readonly lastSeq: number;
  readonly connected: boolean;
  connect(): Promise<this>;
  close(): void;
  subscribe(topic: string, opts?: { since?: number }): void;
  unsubscribe(topic: string): void;
  ack(id: string): void;
  read(id: string): void;
  reconnectNow(): void;
  addEventListener<K extends keyof HeraldEvents>(type: K, listener: (ev: HeraldEvents[K]) => void, options?: boolean | AddEventListenerOptions): void;
}

export declare class MemoryStorage implements StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export declare function connect(opts: ConnectOptions): HeraldClient;
export declare function tokenExpiry(token: string): number | null;
export declare const CLOSE: {
  NORMAL: 1000; RESTARTING: 1012; UNAUTHORIZED: 4001; FORBIDDEN_TOPIC: 4003; SLOW_CONSUMER: 4008; TOO_MANY_SESSIONS: 4009;
};

/**
 * Subscribes this browser to Web Push and registers the subscription with Herald for the
 * token's user (`GET /v1/webpush/key`, `pushManager.subscribe`, `PUT /v1/me/devices/{id}`).
 */
export declare function subscribeWebPush(
  registration: { pushManager: { getSubscription(): Promise<unknown>; subscribe(opts: { userVisibleOnly: boolean; applicationServerKey: Uint8Array }): Promise<unknown> } },
  opts: { api: string; token?: string; getToken?: () => Promise<string> | string; deviceId?: string; fetch?: typeof fetch },
): Promise<{ deviceId: string; subscription: unknown }>;
