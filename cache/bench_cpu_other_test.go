//go:build !unix

package cache

func processCPU() int64 { return -1 }
