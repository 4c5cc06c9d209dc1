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

/** One message in the inbox (`GET /v1/me/inbox`). */
export interface InboxMessage {
  id: string;
  /** The user's inbox seq: `list({ before: seq })` pages from it. */
  seq: number;
  title?: string;
  body?: string;
  data?: Record<string, unknown>;
  created_at: string;
  /** RFC 3339 time it was read (on any device or through the API); null while unread. */
  read_at: string | null;
  archived: boolean;
}

/** A page of the inbox: newest first, and the unread count of the whole inbox. */
export interface InboxPage {
  messages: InboxMessage[];
  unread: number;
}

/** What a mark came to: the ids that were unread and are read now, and the count after. */
export interface InboxMarked {
  ids: string[];
  unread: number;
}

/**
 * The notification centre (`client.inbox`): the user's personal messages with read state,
 * over Herald's HTTP API with the client's token. Errors reject with a `HeraldApiError`.
 */
export interface HeraldInbox {
  /** `GET /v1/me/inbox`: newest first; `limit` 1–200 (default 50), `before` a seq (the next page). */
  list(opts?: { limit?: number; before?: number }): Promise<InboxPage>;
  /** `POST /v1/me/inbox/read {ids}` (at most 100). Every session of the user hears of it. */
  markRead(ids: string[] | string): Promise<InboxMarked>;
  /** `POST /v1/me/inbox/read {all:true}`. */
  markAllRead(): Promise<InboxMarked>;
  /** `POST /v1/me/inbox/archive {ids}`: archived messages no longer count as unread. */
  archive(ids: string[] | string): Promise<InboxMarked>;
  /**
   * Unread messages, kept live: set by `list()` and the marks' answers, by `read` frames (a
   * read on any device), and one more for each new personal message. `null` until the first
   * of those. Each change is an `unread` event.
   */
  readonly unreadCount: number | null;
}

/** An error answer from Herald's HTTP API; the message names the server's. */
export declare class HeraldApiError extends Error {
  readonly name: "HeraldApiError";
  /** HTTP status, e.g. 401. */
  readonly status: number;
  /** The server's error code, e.g. `unauthorized`, `invalid_request`. */
  readonly code: string | null;
  /** The server's error message, e.g. `client token: token expired`. */
  readonly serverMessage: string;
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
  /** Herald's HTTP base for `inbox` (default: from `url`, `wss://h/ws` → `https://h`). */
  apiUrl?: string;
  /** A fetch implementation for `inbox` (default: the global one). */
  fetch?: typeof fetch;
}

export interface HeraldEvents {
  open: CustomEvent<{ session_id: string; user_id: string; heartbeat_s: number }>;
  message: CustomEvent<HeraldMessage>;
  topic: CustomEvent<HeraldMessage>;
  resumed: CustomEvent<{ seq: number; replayed: number; complete: boolean }>;
  subscribed: CustomEvent<{ topic: string; seq: number; replayed?: number; complete?: boolean }>;
  unsubscribed: CustomEvent<{ topic: string }>;
  error: CustomEvent<{ code: string; message?: string; topic?: string }>;
  /** A read on any session of the user or through the API, with the new unread count. */
  read: CustomEvent<{ type: "read"; ids: string[]; unread: number }>;
  /** The inbox's unread count changed (`inbox.unreadCount`). */
  unread: CustomEvent<{ unread: number }>;
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
  /** The notification centre: messages, marks, and the live unread count. */
  readonly inbox: HeraldInbox;
  connect(): Promise<this>;
  close(): void;
  subscribe(topic: string, opts?: { since?: number }): void;
  unsubscribe(topic: string): void;
  ack(id: string): void;
  read(id: string): void;
  reconnectNow(): void;
  addEventListener<K extends keyof HeraldEvents>(type: K, listener: (ev: HeraldEvents[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof HeraldEvents>(type: K, listener: (ev: HeraldEvents[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

export declare class MemoryStorage implements StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export declare function connect(opts: ConnectOptions): HeraldClient;
export declare function tokenExpiry(token: string): number | null;
/** Herald's HTTP base for a WebSocket URL (`wss://h/ws` → `https://h`). */
export declare function httpBase(wsUrl: string): string;
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
