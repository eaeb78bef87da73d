// layertool is the Go side of strata's interop test.
//
//	layertool write DIR   writes DIR as containerd's ChangeWriter would (every entry an
//	                      addition, uname/gname left empty as strata does) to stdout
//	layertool read        reads a gzip layer from stdin with compress/gzip and archive/tar
//	                      and prints "<entries> sha256:<hex of the uncompressed tar>"
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func major(dev uint64) int64 { return int64(((dev >> 8) & 0xfff) | ((dev >> 32) &^ 0xfff)) }
func minor(dev uint64) int64 { return int64((dev & 0xff) | ((dev >> 12) &^ 0xff)) }

func xattrs(path string) map[string]string {
	buf := make([]byte, 65536)
	n, err := syscall.Listxattr(path, buf)
	if err != nil || n == 0 {
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		val := make([]byte, 65536)
		m, err := syscall.Getxattr(path, name, val)
		if err != nil {
			continue
		}
		out["SCHILY.xattr."+name] = string(val[:m])
	}
	return out
}

func write(root string) error {
	tw := tar.NewWriter(os.Stdout)
	inodeSrc := map[uint64]string{}
	err := filepath.Walk(root, func(path string, f os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." || f.Mode()&os.ModeSocket != 0 {
			return nil
		}
		link := ""
		if f.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(f, link)
		if err != nil {
			return err
		}
		hdr.Format = tar.FormatPAX
		hdr.ModTime = hdr.ModTime.Truncate(time.Second)
		hdr.AccessTime = time.Time{}
		hdr.ChangeTime = time.Time{}
		name := filepath.ToSlash(rel)
		if f.IsDir() && !strings.HasSuffix(name, "/") {
			name += "/"
		}
		hdr.Name = name
		hdr.Uname, hdr.Gname = "", ""
		st := f.Sys().(*syscall.Stat_t)
		if f.Mode()&os.ModeDevice != 0 {
			hdr.Devmajor, hdr.Devminor = major(uint64(st.Rdev)), minor(uint64(st.Rdev))
		}
		if !f.IsDir() && st.Nlink > 1 {
			if src, ok := inodeSrc[st.Ino]; ok {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = src
				hdr.Size = 0
			} else {
				inodeSrc[st.Ino] = name
			}
		}
		if x := xattrs(path); len(x) > 0 {
			hdr.PAXRecords = x
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			file, err := os.Open(path)
			if err != nil {
				return err
			}
			defer file.Close()
			if _, err := io.Copy(tw, file); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func read() error {
	gz, err := gzip.NewReader(os.Stdin)
	if err != nil {
		return err
	}
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(gz, h))
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		names = append(names, hdr.Name)
	}
	if _, err := io.Copy(io.Discard, io.TeeReader(gz, h)); err != nil {
		return err
	}
	sort.Strings(names)
	fmt.Printf("%d sha256:%x\n", len(names), h.Sum(nil))
	return nil
}

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "write":
		err = write(os.Args[2])
	case len(os.Args) == 2 && os.Args[1] == "read":
		err = read()
	default:
		err = fmt.Errorf("usage: layertool write DIR | layertool read")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
