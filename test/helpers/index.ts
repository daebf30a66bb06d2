export * from './exec';
export * from './tmp';
export * from './server';
export * from './python';
export * from './fixture';
export * from './raw-nbd';
