package file

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// MaxFileSize is the largest manifest file that is read: 4 MiB. A larger
// file is reported and not read. The API server refuses a request over 3
// MiB, so no single object is near this; a file of many small objects
// can be, and should be split. The limit bounds what one file can make
// meshd hold while it parses (aliases are bounded separately, see
// maxAliasValues).
const MaxFileSize = 4 << 20

// ReadPaths reads manifest files for Build, the way Source reads its
// directory (see readTree): a directory contributes every *.yaml and *.yml
// file below it, and every entry there that cannot be used is returned
// with Err set, for Build to report. A path named explicitly is read
// whatever its extension, and is an entry like any other. ReadPaths fails
// only when a named path does not exist or a named directory cannot be
// listed, because the result would then be misleading.
func ReadPaths(paths ...string) ([]File, error) {
	var files []File
	for _, root := range paths {
		info, err := os.Lstat(root)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", root, err)
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			// A named link to a directory is read as the directory: the
			// user chose it, so it cannot loop behind their back.
			if target, err := os.Stat(root); err == nil && target.IsDir() {
				info = target
			}
		}
		if !info.IsDir() {
			if f, ok := readEntry(root, info.Mode()); ok {
				files = append(files, f)
			}
			continue
		}
		found, err := readTree(root, nil)
		if err != nil {
			return nil, fmt.Errorf("cannot read directory %s: %w", root, err)
		}
		files = append(files, found...)
	}
	return files, nil
}

// readTree reads every manifest below root, the one way both meshd and
// `meshctl validate` look at a directory:
//
//   - Manifests are the *.yaml and *.yml entries of root and of every
//     subdirectory, returned in path order.
//   - Hidden entries (a name starting with ".") are skipped with all they
//     hold: editors' swap files, and the "..data" links of Kubernetes
//     ConfigMap volumes, whose files are read through their visible links.
//   - Links to files are followed; links to directories are not (they
//     could loop), and one is returned with Err set whatever its name. A
//     link's target outside root is read, but Source is not told when it
//     changes.
//   - A manifest entry that cannot be used (see readEntry) is returned
//     with Err set, and so is a subdirectory that cannot be listed, so that
//     nothing is skipped without a word.
//
// enter, when not nil, is called with each directory before it is listed:
// Source watches it then, so a file created meanwhile raises an event.
// readTree fails only when root itself cannot be listed.
func readTree(root string, enter func(dir string)) ([]File, error) {
	var files []File
	var walk func(dir string) error
	walk = func(dir string) error {
		if enter != nil {
			enter(dir)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && dir != root {
				return nil // removed since its parent was listed
			}
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			switch {
			case e.IsDir():
				if err := walk(path); err != nil {
					files = append(files, File{Path: path, dir: true,
						Err: fmt.Errorf("the directory cannot be read: %w", cause(err))})
				}
			case isManifest(path):
				if f, ok := readEntry(path, e.Type()); ok {
					files = append(files, f)
				}
			case e.Type()&fs.ModeSymlink != 0:
				if target, err := os.Stat(path); err == nil && target.IsDir() {
					files = append(files, File{Path: path, Err: errLinkToDir})
				}
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	return files, nil
}

var errLinkToDir = errors.New("this is a symbolic link to a directory, which is not followed (links can make loops); " +
	"link the files in it one by one, or name the directory itself")

// readEntry reads one directory entry whose type (from Lstat or the
// directory listing) is mode. Only regular files, or links to them, are
// ever opened, so a named pipe cannot block meshd and a device is never
// touched; the file is opened non-blocking and checked again after
// opening, in case it was replaced in between. Any entry that cannot be
// used is returned with Err saying why. It reports false when the entry
// has disappeared since it was listed, which is the same as not being
// there.
func readEntry(path string, mode fs.FileMode) (File, bool) {
	f := File{Path: path}
	if mode&fs.ModeSymlink != 0 {
		target, err := os.Stat(path)
		switch {
		case errors.Is(err, syscall.ELOOP):
			f.Err = errors.New("the file is a symbolic link that loops (it leads back to itself)")
			return f, true
		case errors.Is(err, fs.ErrNotExist):
			dest, lerr := os.Readlink(path)
			if lerr != nil {
				return f, false
			}
			f.Err = fmt.Errorf("the file is a symbolic link to %s, which does not exist", dest)
			return f, true
		case err != nil:
			f.Err = fmt.Errorf("the file cannot be read: %w", cause(err))
			return f, true
		case target.IsDir():
			f.Err = errLinkToDir
			return f, true
		case !target.Mode().IsRegular():
			f.Err = fmt.Errorf("the file is a symbolic link to %s, not to a regular file, and is never opened", describeMode(target.Mode()))
			return f, true
		}
		mode = target.Mode()
	}
	if !mode.IsRegular() {
		f.Err = fmt.Errorf("the file is %s, not a regular file, and is never opened", describeMode(mode))
		return f, true
	}
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return f, false
	}
	if err != nil {
		f.Err = fmt.Errorf("the file cannot be read: %w", cause(err))
		return f, true
	}
	defer fh.Close()
	info, err := fh.Stat()
	switch {
	case err != nil:
		f.Err = fmt.Errorf("the file cannot be read: %w", cause(err))
		return f, true
	case !info.Mode().IsRegular():
		f.Err = fmt.Errorf("the file is %s, not a regular file, and is not read", describeMode(info.Mode()))
		return f, true
	case info.Size() > MaxFileSize:
		f.Err = tooLarge(info.Size())
		return f, true
	}
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	switch {
	case err != nil:
		f.Err = fmt.Errorf("the file cannot be read: %w", cause(err))
	case len(data) > MaxFileSize: // it grew after Stat
		f.Err = tooLarge(int64(len(data)))
	default:
		f.Data = data
	}
	return f, true
}

func tooLarge(size int64) error {
	return fmt.Errorf("the file is %.1f MiB; files over %d MiB are not read: split it into smaller files",
		float64(size)/(1<<20), MaxFileSize>>20)
}

// describeMode names a file type that is not a regular file.
func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	default:
		return "a special file"
	}
}

// cause drops the path an *fs.PathError repeats: the problem already
// names the file.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func isManifest(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	return ext == ".yaml" || ext == ".yml"
}
